"""Each paper family through export -> plan -> build (fp32 and int8) -> parity, with its tables.

    .venv/bin/python -m examples.families.deploy [swin navit crossmax restore sr lorat] [--out DIR]

Per family: the export sweep table, the profile plan from a folder of real photo-crop sizes, the
build tables (fp32: every planned profile; int8: the same profiles, calibrated on photo crops), and a
parity check at sizes served exactly, off the divisor grid and between profiles: the bundle's output
shape must equal PyTorch's at every size, and values must agree within 1e-4 relative where the size is
served exactly (fp32). Inputs are real photo crops (the evaluation half; INT8 is calibrated on the
other half).

Weights: ``examples/checkpoints/<family>.pt`` where one was trained (``python -m examples.train swin
navit crossmax restore sr lorat``), else seeded random init. With trained weights each bundle also gets a task
metric against PyTorch FP32: top-1 on held-out digits and its agreement with PyTorch's top-1
(classifiers), PSNR on held-out photo crops and its drop from PyTorch's (restore, sr).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHECKPOINTS = HERE.parent / "checkpoints"


@dataclass(frozen=True)
class Family:
    name: str
    factory: str  # "file.py:factory" under examples/families
    example: tuple | dict  # export example shape(s)
    task: str
    profiles: tuple[str, ...]  # the fp32 bundle's profiles (the int8 one uses the same)
    sizes: tuple[tuple[str, object], ...]  # (label, HxW or {input: HxW}) for the parity check
    divisor: int = 1
    output_names: tuple[str, ...] | None = None
    fixed: dict = field(default_factory=dict)  # other inputs' fixed sizes (multi-input)
    plan_input: str | None = None  # the input whose sizes are planned (multi-input)

    @property
    def factory_path(self) -> str:
        file, _, fn = self.factory.partition(":")
        return f"{HERE / file}:{fn}"

    @property
    def checkpoint(self) -> Path | None:
        """The trained checkpoint (examples/checkpoints/<name>.pt), or None: seeded random init."""
        path = CHECKPOINTS / f"{self.name}.pt"
        return path if path.is_file() else None


FAMILIES = {
    "swin": Family(
        "swin", "swin.py:swin_v2", (1, 3, 64, 64), "classification", ("p0=32-64@48", "p1=96-128@112"),
        (("exact", (48, 48)), ("off-grid", (51, 61)), ("between", (80, 80)), ("non-square", (96, 128))),
    ),
    "navit": Family(
        "navit", "navit.py:navit", (1, 3, 64, 96), "classification", ("p0=32-64@48", "p1=96-128@112"),
        (("exact", (48, 64)), ("off-divisor", (60, 62)), ("between", (80, 80)), ("non-square", (96, 128))),
        divisor=8,
    ),
    "crossmax": Family(
        "crossmax", "crossmax.py:crossmax_ensemble", (1, 3, 64, 64), "classification", ("p0=32-64@48", "p1=96-128@112"),
        (("exact", (48, 64)), ("off-divisor", (50, 61)), ("between", (80, 80)), ("non-square", (96, 128))),
    ),
    "restore": Family(
        "restore", "restore.py:restoration_unet", (1, 3, 64, 64), "dense", ("p0=32-64@48", "p1=96-128@112"),
        (("exact", (48, 64)), ("odd", (45, 61)), ("between", (80, 88)), ("non-square", (96, 128))),
    ),
    "sr": Family(
        "sr", "restore.py:super_resolution", (1, 3, 48, 48), "dense", ("p0=48-64@56", "p1=96-128@112"),
        (("exact", (48, 64)), ("below", (40, 40)), ("odd", (51, 57)), ("between", (80, 88))),
    ),
    "lorat": Family(
        "lorat", "lorat.py:lorat_tracker", {"template": (1, 3, 64, 64), "search": (1, 3, 128, 128)}, "dense",
        ("p0=template:64,search:128-192@160", "p1=template:64,search:224"),
        (("exact", {"template": (64, 64), "search": (160, 160)}),
         ("off-stride", {"template": (64, 64), "search": (150, 171)}),
         ("between", {"template": (64, 64), "search": (200, 200)}),
         ("static", {"template": (64, 64), "search": (224, 224)})),
        output_names=("score", "box"), fixed={"template": "template:64"}, plan_input="search",
    ),
}


def _torch_out(model, feeds: dict) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out = model(*(torch.from_numpy(v) for v in feeds.values()))
    return [t.numpy() for t in (out if isinstance(out, tuple | list) else [out])]


def photo_batch(size, seed: int = 0) -> np.ndarray:
    """One real photo crop (evaluation half) at ``size``, normalized with mean = std = 0.5."""
    from examples.real.photos import batch

    return batch("eval", 1, tuple(size), (0.5,) * 3, (0.5,) * 3, seed=seed)


def _reference(model, feeds: dict, info, runner) -> list[np.ndarray]:
    """PyTorch at the input's own size, or at the served (padded) input where PyTorch refuses the size."""
    try:
        return _torch_out(model, feeds)
    except RuntimeError:
        from mrdeploy.runtime.fitting import fit_inputs

        return _torch_out(model, fit_inputs(feeds, info.decision, runner.pad_mode))


def quality(bundle, model, fam: Family, samples: int = 64) -> list[dict] | None:
    """The task metric of the bundle next to PyTorch FP32 at each parity size, on held-out data:
    classifiers: top-1 on ``samples`` held-out digits and agreement with PyTorch's top-1; restore / sr:
    PSNR on ``samples`` // 8 crops of the photos' evaluation half (noisy / downscaled), its drop from
    PyTorch's, and the baseline's (the noisy input / bicubic); lorat: on ``samples`` held-out template
    matching scenes, the hit rate (top cell inside the target box), the box IoU there, and agreement with
    PyTorch's top cell. None for a model without a trained checkpoint."""
    if fam.checkpoint is None:
        return None
    from examples import data
    from examples import train as t
    from mrdeploy.runtime import load

    rows = []
    with load(bundle) as runner:
        names = runner.input_names
        for label, size in fam.sizes:
            if fam.task == "classification":
                x, y = data.digits_batch(size, "heldout", n=samples, mean=(0.5,) * 3, std=(0.5,) * 3)
                feeds = [{names[0]: x[i:i + 1]} for i in range(len(x))]
            elif fam.name == "lorat":
                z, x, boxes = t.tracking_batch(samples, size["search"], "heldout", seed=t.HELDOUT_PHOTO_SEED,
                                             template=size["template"][0])
                feeds = [{"template": z[i:i + 1], "search": x[i:i + 1]} for i in range(len(x))]
            else:
                x, y = t.restoration_pair(fam.name, max(2, samples // 8), size, "eval", seed=t.HELDOUT_PHOTO_SEED)
                feeds = [{names[0]: x[i:i + 1]} for i in range(len(x))]
            got, ref = [], []
            for f in feeds:
                outs, info = runner.run_with_info(f)
                got.append(list(outs.values()))
                ref.append(_reference(model, f, info, runner))
            got = [np.concatenate(o) for o in zip(*got)]
            ref = [np.concatenate(o) for o in zip(*ref)]
            shown = size["search"] if isinstance(size, dict) else size
            row = {"label": label, "size": "x".join(map(str, shown)), "action": info.decision.action}
            if fam.task == "classification":
                g, r = got[0].argmax(-1), ref[0].argmax(-1)
                row.update({"pytorch top-1": f"{(r == y).mean():.3f}", "bundle top-1": f"{(g == y).mean():.3f}",
                            "top-1 agreement": f"{(g == r).mean():.3f}"})
            elif fam.name == "lorat":
                mg, mr = (t.tracking_metrics(o[0], o[1], boxes, size["search"]) for o in (got, ref))
                row.update({"pytorch hit": f"{mr['hit']:.3f}", "bundle hit": f"{mg['hit']:.3f}",
                            "pytorch IoU": f"{mr['iou']:.3f}", "bundle IoU": f"{mg['iou']:.3f}",
                            "top-cell agreement": f"{(mg['cell'] == mr['cell']).mean():.3f}"})
            else:
                p_ref, p_got = t.psnr(ref[0], y), t.psnr(got[0], y)
                row.update({"baseline PSNR": f"{t.psnr(t.baseline(fam.name, x), y):.2f}", "pytorch PSNR": f"{p_ref:.2f}",
                            "bundle PSNR": f"{p_got:.2f}", "PSNR drop": f"{p_ref - p_got:.3f}"})
            rows.append(row)
    return rows


def check_sizes(bundle, model, fam: Family, seed: int = 0) -> list[dict]:
    """The bundle at each parity size against PyTorch: decision, shapes, max rel error."""
    from mrdeploy.runtime import load

    rows = []
    with load(bundle) as runner:
        names = runner.input_names
        for label, size in fam.sizes:
            sizes = size if isinstance(size, dict) else {names[0]: size}
            feeds = {n: photo_batch(sizes[n], seed + k) for k, n in enumerate(names)}
            outs, info = runner.run_with_info(feeds)
            reference = "own size"
            try:
                refs = _torch_out(model, feeds)
            except RuntimeError:  # PyTorch refuses a size off the model's divisor: compare with what was served
                from mrdeploy.runtime.fitting import fit_inputs

                refs = _torch_out(model, fit_inputs(feeds, info.decision, runner.pad_mode))
                reference = f"{info.decision.action} input (own size refused)"
            got = list(outs.values())
            shapes_equal = all(g.shape == r.shape for g, r in zip(got, refs))
            rel = max(float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-12)) for g, r in zip(got, refs)) if shapes_equal else None
            rows.append({
                "label": label, "size": " / ".join(f"{h}x{w}" for h, w in sizes.values()),
                "profile": info.decision.profile_name, "action": info.decision.action,
                "bundle shape": " ".join("x".join(map(str, g.shape)) for g in got),
                "pytorch shape": " ".join("x".join(map(str, r.shape)) for r in refs),
                "pytorch at": reference, "shapes equal": shapes_equal, "max rel": rel,
            })
    return rows


def format_rows(rows: list[dict]) -> str:
    head = list(rows[0])
    cells = [[("-" if v is None else f"{v:.2e}" if isinstance(v, float) else str(v)) for v in r.values()] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    line = lambda cols: " | ".join(c.ljust(w) for c, w in zip(cols, widths))  # noqa: E731
    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *(line(c) for c in cells)])


def photo_dir(root: Path, split: str, n: int) -> Path:
    from examples.real.photos import write_folder

    folder = root / f"photos_{split}"
    if not folder.is_dir():
        write_folder(folder, split, n)
    return folder


def deploy(name: str, workdir: str | Path, precisions=("fp32", "int8"), calib_samples: int = 8,
           int8_profiles: int | None = None, quality_samples: int = 64) -> dict:
    """Export, plan, build and check one family in ``workdir`` (with its trained checkpoint where there is
    one); returns every table and row. ``int8_profiles``: build only the last (largest) N profiles in int8
    (the tests use 1, to stay quick). ``quality_samples``: held-out digits per size (photo crops: 1/8 of it)
    for the task metric; 0 skips it."""
    from mrdeploy.exporter import export
    from mrdeploy.exporter.build import build_bundle
    from mrdeploy.exporter.loading import load_model
    from mrdeploy.planning import plan_profiles, sizes_from

    fam = FAMILIES[name]
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = work / f"{name}.onnx"
    res = export(fam.factory_path, fam.example, onnx_path, task=fam.task, divisor=fam.divisor, checkpoint=fam.checkpoint,
                 output_names=list(fam.output_names) if fam.output_names else None, mean=(0.5,) * 3, std=(0.5,) * 3)
    out = {"export": res, "sweep": res.sweep.table() if res.sweep else "", "builds": {}, "checkpoint": fam.checkpoint}
    divisor = res.model_info.inputs[-1].divisor
    # a plan from real photo crops' sizes (downscaled by 4 to this model's range), ranged, 2 profiles
    sizes = [(max(32, h // 4), max(32, w // 4)) for h, w in sizes_from(photo_dir(work.parent, "calib", 24))]
    plan = plan_profiles(sizes, 2, divisor=divisor, mode="ranged", max_size=(256, 256))
    out["plan"] = plan.table()
    out["plan_profiles"] = plan.profile_strings(input_name=fam.plan_input, others=list(fam.fixed.values()))
    calib = photo_dir(work.parent, "calib", 24)
    for precision in precisions:
        bundle = work / f"{name}_{precision}"
        kwargs = dict(calib_data=str(calib), calib_samples=calib_samples, calib_method="minmax") if precision == "int8" else {}
        profiles = list(fam.profiles)  # int8_profiles: the largest N, so padding still serves every size
        profiles = profiles[-int8_profiles:] if precision == "int8" and int8_profiles else profiles
        r = build_bundle(onnx_path, bundle, profiles, precision=precision, quiet=True, **kwargs)
        out["builds"][precision] = {"path": bundle, "table": r.table(), "policy": r.policy}
    model = load_model(fam.factory_path, None, fam.checkpoint)
    out["check"] = {p: check_sizes(out["builds"][p]["path"], model, fam) for p in precisions}
    out["quality"] = {p: quality(out["builds"][p]["path"], model, fam, quality_samples) for p in precisions
                      } if quality_samples else {}
    out["model"] = model
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("families", nargs="*", default=list(FAMILIES))
    ap.add_argument("--out", help="work directory (default: a temporary one)")
    ap.add_argument("--quick", action="store_true",
                    help="as the tests run it: int8 for the largest profile only, 4 calibration crops, 16 samples")
    ap.add_argument("--samples", type=int, default=None, help="held-out digits per size for the task metric (64)")
    args = ap.parse_args(argv)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mrdeploy-families-"))
    kw = dict(calib_samples=4, int8_profiles=1, quality_samples=16) if args.quick else {}
    if args.samples is not None:
        kw["quality_samples"] = args.samples
    for name in args.families:
        r = deploy(name, root / name, **kw)
        ckpt = r["checkpoint"]
        weights = f"checkpoint {ckpt.relative_to(HERE.parents[1])}" if ckpt else "seeded random init"
        print(f"\n## {name} (exporter {r['export'].exporter}; divisor {r['export'].model_info.inputs[-1].divisor}; "
              f"{weights})")
        for note in r["export"].notes:
            print(f"note: {note}")
        if r["export"].fallback_reason:
            print(f"fallback: {r['export'].fallback_reason[:300]}")
        print(r["sweep"])
        print(f"\nplan (ranged, from photo-crop sizes): {r['plan_profiles']}\n{r['plan']}")
        for p, b in r["builds"].items():
            print(f"\nbuild {p} (policy {b['policy']}):\n{b['table']}")
        for p, rows in r["check"].items():
            print(f"\nparity vs PyTorch ({p} bundle):\n" + format_rows(rows))
        for p, rows in r["quality"].items():
            if rows:
                print(f"\ntask metric vs PyTorch FP32 ({p} bundle, held-out data):\n" + format_rows(rows))


if __name__ == "__main__":
    main()
