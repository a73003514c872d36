"""``mrdeploy inspect BUNDLE|MODEL.onnx``: inputs, outputs, dynamic axes, metadata, profiles, hashes, versions."""

from __future__ import annotations

import json

import click


@click.command("inspect")
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def command(path: str, as_json: bool) -> None:
    """Show what a bundle directory or an ONNX model holds."""
    from mrdeploy.inspection import format_inspection, inspect_path

    d = inspect_path(path)
    click.echo(json.dumps(d, indent=2) if as_json else format_inspection(d))
