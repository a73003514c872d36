"""``mrdeploy calibrate``: per-profile INT8 (Q/DQ models, calibration caches, a report), no bundle."""

from __future__ import annotations

import click

from mrdeploy.cli import choices
from mrdeploy.cli.options import calibration_options, force_option


@click.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--profile", "profiles", multiple=True, required=True,
              help="Resolution profile, e.g. small=96-160@128 (repeat for several).")
@click.option("--batch", default=None, help="Batch range for every profile, e.g. 1-8@1 (default 1).")
@calibration_options(data_required=True, data_help="Calibration data: a folder of JPEG/PNG images (recursive), "
                     "a .npy/.npz file, or module:callable.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Output directory (replaced whole, only on success, and only if mrdeploy wrote it).")
@click.option("--percentile", type=float, default=99.99, show_default=True, help="For --calib-method percentile.")
@click.option("--heldout", type=click.IntRange(min=0), default=None,
              help="Held-out samples (more items of --calib-data, never calibrated on) for the accuracy check "
                   "[default: up to 32].")
@click.option("--metric", type=click.Choice(["top1", "pixel", "cosine"]), default=None,
              help="Budget metric [default: top1 for classification, pixel for segmentation, else cosine].")
@click.option("--target", type=choices.calibration_targets(), default="onnxruntime", show_default=True,
              help="Backend the Q/DQ model is for: onnxruntime and openvino = uint8 asymmetric activations, "
                   "tensorrt = int8 symmetric activations.")
@click.option("--sizes", "size_mode", type=click.Choice(["spread", "opt", "random"]), default="spread",
              show_default=True, help="Sizes each sample is resized to inside the profile.")
@click.option("--precision", type=click.Choice(["int8", "auto"]), default="int8", show_default=True,
              help="auto: also time FP32 vs INT8 per profile and report the faster that meets the budget.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime threads for evaluation and timing.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@force_option("Replace another mrdeploy output at -o (a bundle); an earlier calibration output is always "
             "replaced, a directory mrdeploy did not write never.")
def command(model, profiles, batch, calib_data, output, calib_method, percentile, calib_samples, heldout, heldout_data,
            max_drop, bias_correction, metric, target, size_mode, precision, threads, seed, as_json, force) -> None:
    """Calibrate MODEL.onnx for INT8 per resolution profile, at each profile's own sizes."""
    import json

    from mrdeploy.calibration import calibrate

    if heldout is not None and heldout_data is not None:
        raise click.UsageError("give --heldout N (more items of --calib-data) or --heldout-data DIR, not both")
    if heldout_data is not None:
        heldout = heldout_data
    result = calibrate(
        model, list(profiles), calib_data, output_dir=output, method=calib_method, percentile=percentile,
        samples=calib_samples,
        seed=seed, target=target, max_drop=max_drop, heldout=heldout, size_mode=size_mode, precision=precision,
        metric=metric, batch=batch, threads=threads, force=force, bias_correction=bias_correction,
    )
    if as_json:
        click.echo(json.dumps(result.report(), indent=1))
        return
    click.echo(result.table())
    skipped = max((len(p.skipped) for p in result.profiles), default=0)
    if skipped:
        click.echo(f"skipped {skipped} unreadable file(s) in {calib_data}", err=True)
    click.echo(f"wrote {len(result.profiles)} Q/DQ model(s), calibration caches and report.json to {output}")
