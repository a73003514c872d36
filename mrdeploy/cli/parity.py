"""``mrdeploy parity BUNDLE``: accuracy parity per resolution against the ONNX and PyTorch models."""

from __future__ import annotations

import click

from mrdeploy.cli.options import (
    parse_model_args,
    policy_option,
    reference_options,
    report_options,
    sizes_option,
)


@click.command("parity")
@click.argument("bundle", type=click.Path())
@reference_options(
    reference_help="Reference model: an ONNX file (default: the bundle's model.onnx) and/or a PyTorch "
                   "factory (module:factory or path.py:factory). Repeatable.",
    checkpoint_help="Weights for the PyTorch reference.")
@click.option("--data", metavar="DIR|digits|shapes", help="Inputs: an image folder, the labeled example "
              "datasets, or (default) seeded noise.")
@sizes_option("Sizes to check")
@click.option("--samples", type=click.IntRange(min=1), default=32, show_default=True, help="Inputs per size.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for every model (default: the libraries' default).")
@policy_option()
@click.option("--min-cosine", type=float, help="Fail when a cosine (vs the reference) is below this.")
@click.option("--max-abs-error", type=float, help="Fail when a max abs error is above this.")
@click.option("--max-top1-drop", type=float, help="Fail when top-1 accuracy drops more than this (labeled "
              "data), or top-1 disagreement exceeds it (unlabeled).")
@click.option("--min-top1-agreement", type=float, help="Fail when top-1 agreement is below this.")
@click.option("--min-pixel-agreement", type=float, help="Segmentation: fail when pixel agreement is below this.")
@click.option("--min-miou-agreement", type=float, help="Segmentation: fail when mIoU agreement is below this.")
@click.option("--max-miou-drop", type=float, help="Segmentation: fail when mIoU drops more than this.")
@click.option("--check-outside", is_flag=True, help="Also gate sizes served by padding or resizing.")
@report_options("parity-report", "parity")
def command(bundle, references, checkpoint, model_args, data, sizes, samples, threads, policy, min_cosine,
            max_abs_error, max_top1_drop, min_top1_agreement, min_pixel_agreement, min_miou_agreement,
            max_miou_drop, check_outside, out, no_plot) -> None:
    """Check a bundle's accuracy against its source models at every resolution.

    Exits non-zero when a threshold fails, so it can gate CI.
    """
    from mrdeploy.parity import ParityFailure, Thresholds, parity
    from mrdeploy.testing import format_table

    th = Thresholds(min_cosine=min_cosine, max_abs_error=max_abs_error, max_top1_drop=max_top1_drop,
                    min_top1_agreement=min_top1_agreement, min_pixel_agreement=min_pixel_agreement,
                    min_miou_agreement=min_miou_agreement, max_miou_drop=max_miou_drop)
    wrote = f"wrote {out}/parity.json, parity.md" + ("" if no_plot else ", parity.png")
    try:
        report = parity(bundle, list(references) or None, checkpoint=checkpoint, data=data, sizes=sizes,
                        samples=samples, threads=threads, model_args=parse_model_args(model_args), policy=policy,
                        thresholds=th, check_outside=check_outside, out=out, plot=not no_plot)
    except ParityFailure as e:
        click.echo(format_table(e.report))
        click.echo(wrote)
        raise
    click.echo(format_table(report))
    checked = ", ".join(f"{k}={v}" for k, v in report.thresholds.items()) or "no thresholds given"
    click.echo(f"parity passed at {len(report.sizes)} sizes ({checked}) in {report.seconds:.1f} s")
    click.echo(wrote)
