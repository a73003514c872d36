#!/usr/bin/env bash
# Installs mrdeploy into .venv (see setup.sh) and runs the main job end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/demo.py "$@"
