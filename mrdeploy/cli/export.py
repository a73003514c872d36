"""``mrdeploy export MODEL -o OUT.onnx``: torch -> dynamic-resolution ONNX, checked over a resolution sweep."""

from __future__ import annotations

import click

from mrdeploy.cli.options import force_option, model_options, parse_model_args, parse_value
from mrdeploy.errors import ExportError

__all__ = ["command", "parse_model_args", "parse_value"]  # the parsers live in mrdeploy.cli.options


def parse_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise ExportError(f"{what} {text!r} does not parse: expected comma-separated numbers, e.g. 0.485,0.456,0.406") from e


def per_input_option(items, what: str, conv):
    """``--min-size 96`` (every input) or ``--min-size template=112 --min-size search=224``."""
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        return conv(items[0])
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ExportError(f"{what} {item!r}: with several values give input=VALUE, e.g. search=224")
        out[name.strip()] = conv(value)
    return out


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError as e:
        raise ExportError(f"divisor {text!r} is not an integer") from e


def _size(text: str):
    from mrdeploy.exporter.shapes import parse_size

    return parse_size(text)


def _spatial(items):
    if not items:
        return None
    out = {}
    for item in items:
        name, _, stride = item.partition(":")
        out[name] = _int(stride) if stride else 1
    return out


def _scales(items):
    out = {}
    for item in items:
        name, sep, ratio = item.partition("=")
        if not sep or not name or not ratio:
            raise click.BadParameter(f"expected NAME=RATIO (e.g. sr=2, heatmap=1/4), got {item!r}", param_hint="--output-scale")
        out[name.strip()] = ratio.strip()
    return out or None


@click.command("export")
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@model_options(checkpoint_help="State dict (or a dict holding one under state_dict/model).", checkpoint_exists=False,
               model_arg_help="Keyword argument for the factory (repeatable).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NxCxHxW",
              help="Example shape, default 1x3x224x224; several inputs: name=NxCxHxW, repeated, in forward order.")
@click.option("--static", is_flag=True, help="Fix batch, height and width to the example shape.")
@click.option("--min-size", multiple=True, metavar="S|HxW", help="Smallest valid size (recorded in metadata); input=S for one input.")
@click.option("--max-size", multiple=True, metavar="S|HxW", help="Largest valid size (recorded in metadata); input=S for one input.")
@click.option("--divisor", multiple=True, metavar="N", help="Valid sizes are multiples of N (default 1); input=N for one input.")
@click.option("--mean", help="Per-channel mean after scaling pixels to [0,1], e.g. 0.485,0.456,0.406.")
@click.option("--std", help="Per-channel std, e.g. 0.229,0.224,0.225.")
@click.option("--labels", type=click.Path(dir_okay=False), help="Text file, one label per line.")
@click.option("--task", type=click.Choice(["classification", "segmentation", "dense"]), default="classification", show_default=True)
@click.option("--name", help="Model name recorded in metadata (default: the factory's name).")
@click.option("--output-names", help="Comma-separated output names (default logits / mask_logits / output).")
@click.option("--spatial-output", "spatial_outputs", multiple=True, metavar="NAME[:STRIDE]",
              help="An output whose last two axes follow the input (default: inferred for segmentation/dense).")
@click.option("--output-scale", "output_scales", multiple=True, metavar="NAME=RATIO",
              help="A spatial output's size per input pixel, e.g. sr=2 or heatmap=1/4 (default: inferred by "
                   "running the model at a few sizes).")
@click.option("--opset", type=int, help="ONNX opset (default: the exporter's).")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True,
              help="auto: dynamo, falling back to TorchScript (the reason is printed).")
@click.option("--no-optimize", is_flag=True, help="Skip onnxslim.")
@click.option("--no-validate", is_flag=True, help="Skip the resolution sweep.")
@click.option("--validate-sizes", metavar="S,HxW,...",
              help="Sweep these sizes (batch 1, plus batch 3 at the export size); several inputs: one size per "
                   "input per item, template:112+search:224 (or 112/224 in input order).")
@click.option("--atol", type=float, help="Absolute tolerance (default 1e-4).")
@click.option("--rtol", type=float, help="Tolerance relative to the output's scale, max |output| (default 1e-4).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the result and sweep as JSON.")
@force_option("Replace another mrdeploy output file at -o (never a file mrdeploy did not write).")
def command(model, output, checkpoint, model_args, input_shapes, static, min_size, max_size, divisor, mean, std,
            labels, task, name, output_names, spatial_outputs, output_scales, opset, exporter, no_optimize, no_validate,
            validate_sizes, atol, rtol, report, force):
    """Export MODEL (package.module:factory or path/to/file.py:factory) to ONNX with dynamic batch/H/W.

    The file is checked against PyTorch at the export size, 0.5x/0.75x/1.5x/2x of it, a non-square size
    and batch 3; a model right at the export size and wrong elsewhere has a baked shape and is refused.
    """
    from mrdeploy.exporter import SweepError, export
    from mrdeploy.exporter.shapes import parse_input_shapes, parse_sizes

    shapes = parse_input_shapes(list(input_shapes) or ["1x3x224x224"])
    kwargs = dict(
        model_args=parse_model_args(model_args),
        checkpoint=checkpoint,
        dynamic=not static,
        min_size=per_input_option(min_size, "--min-size", _size),
        max_size=per_input_option(max_size, "--max-size", _size),
        divisor=per_input_option(divisor, "--divisor", _int) or 1,
        mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std"),
        labels=labels,
        task=task,
        name=name,
        output_names=[n.strip() for n in output_names.split(",")] if output_names else None,
        spatial_outputs=_spatial(spatial_outputs),
        output_scale=_scales(output_scales),
        opset=opset,
        exporter=exporter,
        optimize=not no_optimize,
        validate=not no_validate,
        validate_sizes=parse_sizes(validate_sizes) if validate_sizes else None,
        atol=atol,
        rtol=rtol,
        report=report,
        force=force,
    )
    try:
        result = export(model, shapes, output, **kwargs)
    except SweepError as e:
        click.echo(e.report.table())
        if report:
            click.echo(f"report: {report}")
        raise
    how = result.exporter
    if result.fallback_reason:
        how += f" (dynamo failed: {result.fallback_reason})"
    click.echo(f"exporter: {how}; opset {result.opset}")
    if result.optimizer:
        click.echo(f"optimized with {result.optimizer}: {result.nodes_before} -> {result.nodes_after} nodes")
    else:
        click.echo(f"not optimized: {result.nodes_after} nodes")
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.sweep is not None:
        click.echo(result.sweep.table())
        n = len(result.sweep.rows)
        click.echo(f"sweep: {n}/{n} sizes pass (atol {result.sweep.atol:g}, rtol {result.sweep.rtol:g})")
    else:
        click.echo("sweep: skipped (--no-validate)")
    if report:
        click.echo(f"report: {report}")
    click.echo(f"wrote {result.path} ({result.seconds:.1f}s)")
