"""``mrdeploy bench BUNDLE``: latency per resolution against the dynamic ONNX model and PyTorch eager."""

from __future__ import annotations

import click

from mrdeploy.cli.options import (
    parse_model_args,
    policy_option,
    reference_options,
    report_options,
    sizes_option,
)


@click.command("bench")
@click.argument("bundle", type=click.Path())
@sizes_option("Sizes")
@reference_options(
    reference_help="Also time a PyTorch model (module:factory or path.py:factory); an .onnx replaces the "
                   "bundle's model.onnx as the dynamic ONNX model. Repeatable.",
    checkpoint_help="Weights for the PyTorch model.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for every target (default: all cores).")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs per size and target.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed runs first.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size of every call.")
@click.option("--spin", is_flag=True, help="Let ONNX Runtime/OpenMP threads busy-wait between calls (their "
              "default; unfair when targets are interleaved on shared cores).")
@policy_option()
@report_options("bench-report", "bench")
def command(bundle, sizes, references, checkpoint, model_args, threads, runs, warmup, batch, spin, policy,
            out, no_plot) -> None:
    """Time the bundle per resolution, side by side with the dynamic ONNX model and PyTorch eager."""
    from mrdeploy.bench import bench

    report = bench(bundle, sizes=sizes, reference=list(references) or None, checkpoint=checkpoint,
                   threads=threads, runs=runs, warmup=warmup, batch=batch,
                   model_args=parse_model_args(model_args), policy=policy, spin=spin, out=out, plot=not no_plot)
    has_pt = any(r.target == "pytorch" for r in report.rows)
    by = {(r.size, r.target): r for r in report.rows}
    head = f"{'size':>10}  {'served by':<24} {'bundle':>9} {'onnx':>9}" + (f" {'pytorch':>9}" if has_pt else "")
    head += f"  {'vs onnx':>8}" + (f"  {'vs torch':>8}" if has_pt else "")
    click.echo(f"p50 latency in ms, {report.threads} thread(s), {report.runs} runs per size and target")
    click.echo(head)
    for s in report.sizes:
        size = s["size"]
        line = f"{size:>10}  {s['profile'] + ' (' + s['precision'] + ', ' + s['action'] + ')':<24}"
        line += f" {by[(size, 'bundle')].p50_ms:9.2f} {by[(size, 'onnx')].p50_ms:9.2f}"
        if has_pt:
            line += f" {by[(size, 'pytorch')].p50_ms:9.2f}"
        line += f"  {s['speedup_vs_onnx']:7.2f}x"
        if has_pt:
            line += f"  {s['speedup_vs_pytorch']:7.2f}x"
        click.echo(line)
    click.echo(f"wrote {out}/bench.json, bench.md" + ("" if no_plot else ", bench.png") + f" in {report.seconds:.1f} s")
