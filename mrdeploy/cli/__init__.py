"""The ``mrdeploy`` command line: a thin layer over the Python API.

Each subcommand lives in its own module here and defines ``command`` (a click command or group);
heavy imports happen inside the command, so ``mrdeploy --help`` is fast.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import click

from mrdeploy import __version__
from mrdeploy._atomic import install_signal_cleanup, remove_stale
from mrdeploy._progress import set_quiet
from mrdeploy.errors import MrdeployError

_COMMAND_MODULES = ["export", "profiles", "calibrate", "build", "run", "inspect", "parity", "bench", "triton"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mrdeploy")
@click.option("--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def cli(verbose: bool, quiet: bool) -> None:
    """Deploy multi-resolution vision models: export, profile, calibrate, build, run, check."""
    set_quiet(quiet)


for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"mrdeploy.cli.{_name}")
    except ModuleNotFoundError as _e:  # a command still being written
        if _e.name != f"mrdeploy.cli.{_name}":
            raise
        continue
    cli.add_command(_module.command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 1; --verbose adds the traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    # --verbose and --quiet are accepted anywhere on the line, not only before the subcommand.
    verbose = "--verbose" in args
    if "--quiet" in args:
        set_quiet(True)
    args = [a for a in args if a not in ("--verbose", "--quiet")]
    install_signal_cleanup()  # SIGTERM/SIGHUP: temporaries removed, like on Ctrl-C
    remove_stale()  # run directories of killed mrdeploy processes
    try:
        cli.main(args=args, prog_name="mrdeploy", standalone_mode=False)
    except MrdeployError as e:
        if verbose:
            traceback.print_exc()
        click.echo(f"mrdeploy: error: {e}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("mrdeploy: aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
