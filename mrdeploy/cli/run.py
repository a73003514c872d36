"""``mrdeploy run BUNDLE INPUT...``: serve images or .npy arrays and show which profile served each."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mrdeploy.cli import choices
from mrdeploy.cli.options import policy_option


def _group_inputs(items: tuple[str, ...], input_names: list[str]) -> list[dict[str, Path]]:
    """Command-line inputs -> samples. One-input models: each item is a file. Several inputs: items are
    ``name=FILE`` and every input name must appear the same number of times (the k-th of each makes the
    k-th sample)."""
    from mrdeploy.errors import InputError

    if len(input_names) == 1:
        return [{input_names[0]: Path(i.split("=", 1)[1] if i.startswith(f"{input_names[0]}=") else i)}
                for i in items]
    per: dict[str, list[Path]] = {n: [] for n in input_names}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or name not in per:
            raise InputError(
                f"input {item!r}: this model has inputs {input_names}; give each as NAME=FILE "
                f"(e.g. {input_names[0]}=a.png {input_names[1]}=b.png)"
            )
        per[name].append(Path(file))
    counts = {n: len(v) for n, v in per.items()}
    if len(set(counts.values())) != 1:
        raise InputError(f"expected the same number of files for every input, got {counts}")
    return [{n: per[n][k] for n in input_names} for k in range(next(iter(counts.values())))]


def _fmt_hw(shape) -> str:
    return f"{shape[-2]}x{shape[-1]}"


@click.command("run")
@click.argument("bundle", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@policy_option()
@click.option("--top-k", "top_k", type=click.IntRange(min=1), default=5, show_default=True, help="Classes to show (classification).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write masks (PNG + .npy) / outputs here.")
@click.option("--providers", help="ONNX Runtime providers, e.g. cuda or tensorrt,cuda (default: cpu).")
@click.option("--backend", type=choices.backends(), help="Serve only this backend's profiles.")
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads per engine.")
@click.option("--max-loaded", type=click.IntRange(min=1), help="Keep at most N engines loaded (least recently used goes first).")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True, help="Run each input N times; report the median latency.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per input instead of text.")
def command(bundle, inputs, policy, top_k, out_dir, providers, backend, threads, max_loaded, repeat, as_json) -> None:
    """Serve INPUT files (PNG/JPEG images or .npy arrays) with a bundle.

    Prints, per input, the profile that served it, what was done to fit it (exact, pad, resize), its
    latency and the top-k classes (classification); segmentation masks go to --out as a palette PNG
    and the logits as .npy. Several-input models take NAME=FILE items.
    """
    import numpy as np

    import mrdeploy.runtime as rt
    from mrdeploy.errors import InputError
    from mrdeploy.runtime.images import load_input, save_mask_png
    from mrdeploy.runtime.postprocess import class_fractions, mask_from_logits, topk

    runner = rt.load(bundle, backend=backend, providers=providers, policy=policy, threads=threads,
                     max_loaded=max_loaded)
    model = runner.model
    infos = {i.name: i for i in model.inputs}
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    failed = 0
    with runner:
        samples = _group_inputs(inputs, runner.input_names)
        for sample in samples:
            try:
                arrays = {n: load_input(p, infos[n]) if n in infos else np.load(p) for n, p in sample.items()}
                outputs, info = runner.run_with_info(arrays)
            except InputError as e:  # one bad input does not stop the others; the exit code says it
                failed += 1
                where = " ".join(str(p) for p in sample.values())
                click.echo(f"mrdeploy: error: {where}: {e}", err=True)
                continue
            latencies = [info.latency_ms]
            for _ in range(max(0, repeat - 1)):
                latencies.append(runner.run_with_info(arrays)[1].latency_ms)
            d = info.decision
            label = " ".join(f"{n}={p}" for n, p in sample.items()) if len(sample) > 1 else str(next(iter(sample.values())))
            stem = next(iter(sample.values())).stem
            record = {
                "input": label,
                "size": {n: list(s) for n, s in d.input_shapes.items()},
                "profile": d.profile.name,
                "profile_range": d.profile.describe().split("=", 1)[1],
                "action": d.action,
                "served": {n: list(s) for n, s in d.served_shapes.items()},
                "latency_ms": float(np.median(latencies)),
                "load_ms": info.load_ms,
            }
            lines = []
            if model.task == "classification":
                logits = next(iter(outputs.values()))
                for b in range(logits.shape[0]):
                    best = topk(logits[b], top_k, model.labels)
                    record.setdefault("top_k", []).append([{"index": i, "label": lab, "prob": p} for i, lab, p in best])
                    prefix = f"  [{b}] " if logits.shape[0] > 1 else "  "
                    lines += [f"{prefix}{r + 1}. {lab:<16} {p * 100:6.2f}%" for r, (_, lab, p) in enumerate(best)]
            elif model.task == "segmentation":
                spatial = [o.name for o in model.outputs if o.spatial] or list(outputs)
                logits = outputs[spatial[0]]
                mask = mask_from_logits(logits[0])
                shares = class_fractions(mask, model.labels)
                record["classes"] = [{"label": lab, "fraction": f} for lab, f in shares]
                lines.append("  " + ", ".join(f"{lab} {f * 100:.1f}%" for lab, f in shares[:top_k]))
                if out:
                    png = save_mask_png(mask, out / f"{stem}_mask.png")
                    npy = out / f"{stem}_{spatial[0]}.npy"
                    np.save(npy, logits[0])
                    record["written"] = [str(png), str(npy)]
                    lines.append(f"  wrote {png} and {npy}")
            else:
                record["outputs"] = {k: list(v.shape) for k, v in outputs.items()}
                lines.append("  " + ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items()))
                if out:
                    for k, v in outputs.items():
                        np.save(out / f"{stem}_{k}.npy", v)
                    record["written"] = [str(out / f"{stem}_{k}.npy") for k in outputs]
                    lines.append(f"  wrote {len(outputs)} .npy file(s) to {out}")
            if as_json:
                click.echo(json.dumps(record))
                continue
            sizes = ", ".join(_fmt_hw(s) for s in d.input_shapes.values())
            served = ", ".join(_fmt_hw(s) for s in d.served_shapes.values())
            fit = d.action if d.action == "exact" else f"{d.action} to {served}"
            timing = f"{record['latency_ms']:.2f} ms" + (f" (median of {repeat})" if repeat > 1 else "")
            click.echo(f"{label}: {sizes} -> profile {d.profile.name} ({record['profile_range']}), {fit}, {timing}")
            for line in lines:
                click.echo(line)
    if failed:
        raise InputError(f"{failed} of {len(samples)} input(s) could not be served (see above)")
