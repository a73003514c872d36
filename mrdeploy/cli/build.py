"""``mrdeploy build-engine MODEL.onnx -o BUNDLE --profile ...``: one engine per profile, as a bundle."""

from __future__ import annotations

import click

from mrdeploy.cli import choices
from mrdeploy.cli.options import calibration_options, force_option, policy_option


@click.command("build-engine")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Bundle directory to write.")
@click.option(
    "--profile", "profiles", multiple=True,
    help="Resolution profile (repeatable): 224, 256x192, 96-160@128, 192x256-384x512@288x384, "
    "name=SPEC, or input:SPEC,input:SPEC for several inputs.",
)
@click.option("--profiles", "profiles_file", type=click.Path(exists=True, dir_okay=False), help="YAML/JSON file of profiles (e.g. from `mrdeploy profiles plan`).")
@click.option("--batch", help="Batch range MIN-MAX[@OPT], e.g. 1-8@1 (default 1).")
@click.option("--backend", type=choices.build_backends(), default="onnxruntime", show_default=True,
              help="A registered backend (ONNX Runtime, TensorRT, OpenVINO, ...), or auto: per profile, every "
              "backend and precision this machine runs is built and timed, and the fastest within --max-drop kept.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8", "auto"]), default="fp32", show_default=True,
              help="What the backend builds: bf16 is OpenVINO's, on a CPU with bf16 instructions.")
@policy_option(help="What the runtime does with a size no profile contains [default: resize for "
                   "classification, pad for segmentation/dense and any model with spatial outputs]; "
                   "letterbox resizes keeping the aspect ratio and pads the rest.")
@click.option("--pad-mode", type=click.Choice(["zero", "reflect", "edge"]), default="zero", show_default=True,
              help="How padded inputs are filled (recorded in the manifest).")
@click.option("--divisor", type=click.IntRange(min=1), help="Sizes must be multiples of this (models without mrdeploy metadata).")
@click.option("--spatial-outputs", multiple=True, help="Outputs whose last two axes follow the input (NAME or NAME:STRIDE).")
@click.option("--mean", help="Per-channel mean after scaling pixels to [0,1], e.g. 0.485,0.456,0.406.")
@click.option("--std", help="Per-channel std, e.g. 0.229,0.224,0.225.")
@click.option("--min-size", help="Smallest valid input size (N or HxW).")
@click.option("--max-size", help="Largest valid input size (N or HxW).")
@click.option("--workspace", type=click.IntRange(min=1), help="TensorRT workspace limit in MiB (default 1024).")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="TensorRT timing cache file: read if present, updated after the build.")
@click.option("--hardware-compatible", is_flag=True, help="TensorRT engines that run on any Ampere or newer GPU.")
@click.option("--threads", type=click.IntRange(min=0), help="Inference threads recorded in the bundle (ONNX Runtime intra-op threads, OpenVINO INFERENCE_NUM_THREADS; 0: the backend's default).")
@calibration_options(data_required=False, data_help="Calibration images (int8/auto): a folder, a .npy/.npz "
                     "file or module:callable.")
@click.option("--no-source-timing", "time_source", flag_value=False, default=None,
              help="Keep every specialized artifact without timing it against the source model (by default a "
              "profile the source model could serve keeps whichever of the two is faster): artifacts that do "
              "not depend on timing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@force_option("Replace another mrdeploy output at -o (a calibration output); an existing bundle is always "
             "replaced, a directory mrdeploy did not write never.")
def command(model, output, profiles, profiles_file, batch, backend, precision, policy, pad_mode, divisor, spatial_outputs,
            mean, std, min_size, max_size, workspace, timing_cache, hardware_compatible, threads, calib_data,
            calib_method, calib_samples, heldout_data, max_drop, bias_correction, time_source, quiet, force):
    """Build MODEL.onnx into a bundle: one engine per resolution profile (checked against the model)."""
    from mrdeploy.exporter.build import build_bundle

    result = build_bundle(
        model, output, list(profiles), profiles_file=profiles_file, batch=batch, backend=backend,
        precision=precision, policy=policy, pad_mode=pad_mode, divisor=divisor, spatial_outputs=list(spatial_outputs) or None,
        mean=mean, std=std, min_size=min_size, max_size=max_size, threads=threads, workspace=workspace,
        timing_cache=timing_cache, hardware_compatible=hardware_compatible, calib_data=calib_data,
        calib_method=calib_method, calib_samples=calib_samples, heldout_data=heldout_data, max_drop=max_drop,
        bias_correction=bias_correction, quiet=quiet,
        force=force, time_source=time_source,
    )
    click.echo(result.table())
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"wrote {result.path} ({len(result.profiles)} profiles, policy {result.policy})")
