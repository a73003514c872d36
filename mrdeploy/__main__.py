from mrdeploy.cli import main

main()
