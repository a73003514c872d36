"""The main job, end to end on the example ViT (ResFormer-style, trained on digits at several sizes).

    bash scripts/demo.sh                 # installs into .venv, then runs this
    .venv/bin/python examples/demo.py [--out report/] [--quick]

Every step is a real ``mrdeploy`` command run as a subprocess; the command is echoed and its output
shown live and saved. Steps: export with the resolution sweep; a folder of PNGs of varied sizes;
``profiles plan`` on it; ``build-engine`` with ``--precision auto`` and 3 profiles; ``inspect``; ``run``
on held-out digit images of 5 sizes (one outside every profile); ``parity`` on labeled digits against
PyTorch and the ONNX model, then again at the sizes outside every profile with ``--policy pad`` to
compare with the bundle's ``resize``; ``bench`` against the dynamic ONNX model and PyTorch eager. Then a
real pretrained CNN on real photos (EfficientNet-Lite1, examples/demo_real.py; ``--no-real`` skips it):
export, plan, INT8 per profile with the accuracy budget, parity, bench. The report folder gets README.md
(tables, plots, every command with its output) and each step's output.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.demo_report import (  # noqa: E402  (after the path setup above)
    bench_intro,
    bundle_table,
    outside_sizes,
    policy_table,
    section,
    stream,
)

FACTORY = "examples/resformer.py:resformer_tiny"
CHECKPOINT = "examples/checkpoints/vit.pt"
# a folder of "user data": digits drawn at the sizes a camera pipeline might deliver
POLICY, OTHER_POLICY = "resize", "pad"  # the bundle's policy for sizes outside every profile, and the one compared
IMAGE_SIZES = [(64, 64), (72, 96), (96, 96), (96, 128), (112, 112), (128, 128), (128, 160), (160, 160), (176, 176)]


class Step:
    def __init__(self, index: int, title: str, argv: list[str], shown: str, seconds: float, output: str, rc: int):
        self.index, self.title, self.argv, self.shown = index, title, argv, shown
        self.seconds, self.output, self.rc = seconds, output, rc


class Demo:
    def __init__(self, out: Path, quick: bool, total_steps: int):
        self.out = out
        self.quick = quick
        self.total = total_steps
        self.steps: list[Step] = []
        self.t0 = time.perf_counter()
        exe = Path(sys.executable).parent / "mrdeploy"
        self.base = [str(exe)] if exe.is_file() else [sys.executable, "-m", "mrdeploy"]
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def rel(self, p: Path) -> str:
        """Paths inside the repository relative to it (commands run from the root), others absolute."""
        p = Path(p).resolve()
        return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)

    def header(self, title: str) -> None:
        n = len(self.steps) + 1
        elapsed = time.perf_counter() - self.t0
        print(f"\n[{n}/{self.total}] {title}   (elapsed {elapsed:.0f} s)", flush=True)

    def run(self, title: str, args: list[str], ok_codes: tuple[int, ...] = (0,)) -> Step:
        """Run ``mrdeploy ARGS`` from the repository root, streaming its output; stop the demo on failure."""
        self.header(title)
        shown = "mrdeploy " + " ".join(shlex.quote(a) for a in args)
        print(f"$ {shown}", flush=True)
        t = time.perf_counter()
        rc, output = stream(self.base + args)
        step = Step(len(self.steps) + 1, title, args, shown, time.perf_counter() - t, output, rc)
        self.steps.append(step)
        slug = title.split()[0].lower().replace("/", "-")
        (self.out / "logs" / f"{step.index:02d}-{slug}.txt").write_text(f"$ {shown}\n{step.output}\n")
        print(f"  ({step.seconds:.1f} s)", flush=True)
        if rc not in ok_codes:
            self.write_readme(failed=step)
            raise SystemExit(f"demo: step {step.index} ({title}) failed with exit code {rc}; see {self.rel(self.out)}/logs")
        return step

    def python_step(self, title: str, shown: str, fn) -> Step:
        """A step done in this process (writing example images); echoed like a command."""
        self.header(title)
        print(f"$ {shown}", flush=True)
        t = time.perf_counter()
        output = fn()
        for line in output.splitlines():
            print(f"  {line}", flush=True)
        step = Step(len(self.steps) + 1, title, [], shown, time.perf_counter() - t, output, 0)
        self.steps.append(step)
        (self.out / "logs" / f"{step.index:02d}-{title.split()[0].lower()}.txt").write_text(f"$ {shown}\n{output}\n")
        return step

    # ------------------------------------------------------------------------------------------------

    def write_readme(self, failed: Step | None = None, notes: list[str] | None = None) -> Path:
        from mrdeploy.bench import machine_info

        total = time.perf_counter() - self.t0
        m = machine_info()
        lines = [
            "# mrdeploy demo report: the example ViT from PyTorch to a 3-profile bundle",
            "",
            f"Generated by `examples/demo.py{' --quick' if self.quick else ''}` on {m['date']}, "
            f"{m['cpu']} ({m['cores']} cores), in {total:.0f} s.",
            "",
        ]
        lines += [f"- {n}" for n in notes or []]
        if notes:
            lines.append("")
        if failed is not None:
            lines += [f"**The demo stopped: step {failed.index} ({failed.title}) exited with {failed.rc}.**", ""]
        lines += ["## Steps", "", "| # | step | command | time |", "| ---: | --- | --- | ---: |"]
        for s in self.steps:
            lines.append(f"| {s.index} | {s.title} | `{s.shown}` | {s.seconds:.1f} s |")
        lines.append("")
        manifest = self.out / "bundle" / "manifest.json"
        if manifest.is_file():
            lines += ["## The bundle", "", *bundle_table(manifest), ""]
        parity_md = self.out / "parity" / "parity.md"
        if parity_md.is_file():
            lines += ["## Parity per resolution", "", *section(parity_md.read_text(), "## Summary per size", "parity/"), ""]
        other_json = self.out / f"parity-{OTHER_POLICY}" / "parity.json"
        if parity_md.is_file() and other_json.is_file():
            lines += [f"### Sizes outside every profile: {POLICY} or {OTHER_POLICY}", "",
                      *policy_table(self.out / "parity" / "parity.json", other_json), ""]
        bench_md = self.out / "bench" / "bench.md"
        if bench_md.is_file():
            lines += ["## Latency per resolution", "", *bench_intro(bench_md.read_text()), "",
                      *section(bench_md.read_text(), "## Latency p50 per size", "bench/"), ""]
        from examples import demo_real

        lines += demo_real.report_lines(self.out)
        lines += ["## Every command and its output", ""]
        for s in self.steps:
            out = s.output.splitlines()
            if len(out) > 80:
                out = out[:40] + [f"... ({len(out) - 70} lines cut; full output in logs/) ..."] + out[-30:]
            lines += [f"### {s.index}. {s.title} ({s.seconds:.1f} s)", "", "```", f"$ {s.shown}", *out, "```", ""]
        path = self.out / "README.md"
        path.write_text("\n".join(lines) + "\n")
        return path


def write_images(folder: Path, n: int) -> str:
    from examples.data import write_image_folder

    if folder.exists():
        shutil.rmtree(folder)
    paths = write_image_folder(folder, n=n, sizes=IMAGE_SIZES, kind="digits", seed=0)
    counts: dict[str, int] = {}
    for p in paths:
        size = p.stem.rsplit("_", 1)[-1]
        counts[size] = counts.get(size, 0) + 1
    listing = ", ".join(f"{k} x{v}" for k, v in counts.items())
    return f"wrote {len(paths)} PNG images into {folder} (2 subfolders); sizes (HxW): {listing}"


def write_run_images(folder: Path, bundle: Path) -> tuple[list[Path], str]:
    """Five held-out digit images: each profile's opt, another size inside the middle profile, and one
    smaller than every profile (served under the bundle's policy)."""
    import numpy as np
    from PIL import Image

    from examples.data import digits, digits_at
    from mrdeploy.runtime.manifest import Manifest

    m = Manifest.read(bundle)
    profiles = sorted(m.profile_list, key=lambda p: p.area("max"))
    sizes = [tuple(next(iter(p.inputs.values())).opt[-2:]) for p in profiles]
    mid = next(iter(profiles[len(profiles) // 2].inputs.values()))
    inside = (mid.max[-2], mid.min[-1])
    sizes.append(inside if inside not in sizes else tuple(mid.max[-2:]))
    low = next(iter(profiles[0].inputs.values())).min[-2:]
    div = max(1, m.model.inputs[0].divisor)
    sizes.append((max(div, low[0] - 2 * div), max(div, low[1] - div)))
    images, labels = digits("heldout")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    paths = []
    for i, (h, w) in enumerate(sizes[:5]):
        x = digits_at(images[i][None], (h, w))[0]
        arr = (np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
        path = folder / f"digit{labels[i]}_{h}x{w}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths, "wrote " + ", ".join(p.name for p in paths)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="report", help="Report directory (default: report/).")
    ap.add_argument("--quick", action="store_true", help="Fewer images, samples and runs (for tests).")
    ap.add_argument("--onnx", help="Use this exported ViT (from `mrdeploy export`) instead of step 1.")
    ap.add_argument("--no-real", action="store_true",
                    help="Skip the second part (EfficientNet-Lite1 on real photos, examples/demo_real.py).")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out = out if out.is_absolute() else (Path.cwd() / out)
    out.mkdir(parents=True, exist_ok=True)
    q = args.quick
    demo = Demo(out, q, total_steps=10 if args.no_real else 16)
    notes = []
    ckpt = ROOT / CHECKPOINT
    model_args = ["--model-arg", "num_classes=10"]
    ckpt_args = ["--checkpoint", CHECKPOINT] if ckpt.is_file() else []
    if not ckpt_args:
        notes.append(f"{CHECKPOINT} is missing: the ViT has random weights, so accuracies are at chance level.")
    rel = demo.rel
    onnx_path, bundle = out / "vit.onnx", out / "bundle"
    images, run_dir = out / "images", out / "run_images"
    print(f"mrdeploy demo -> {rel(out)}/  ({'quick' if q else 'full'} run)", flush=True)

    labels = out / "labels.txt"
    labels.write_text("".join(f"{i}\n" for i in range(10)))
    if args.onnx:
        shutil.copyfile(args.onnx, onnx_path)
        demo.python_step("export (given)", f"cp {args.onnx} {rel(onnx_path)}",
                         lambda: f"--onnx given: using {args.onnx} instead of exporting")
    else:
        demo.run("export with the resolution sweep", [
            "export", FACTORY, *model_args, *ckpt_args, "--input-shape", "1x3x128x128", "--name", "vit",
            "--task", "classification", "--labels", rel(labels), "--divisor", "8", "--min-size", "32",
            "--max-size", "512", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "-o", rel(onnx_path),
        ])
    n_images = 27 if q else 90
    demo.python_step(
        "images of varied sizes",
        f"python -c 'from examples.data import write_image_folder; write_image_folder(\"{rel(images)}\", n={n_images}, ...)'",
        lambda: write_images(images, n_images),
    )
    profiles_file = out / "profiles.json"
    demo.run("profiles plan", ["profiles", "plan", "--sizes-from", rel(images), "--max-profiles", "3",
                               "--mode", "ranged", "--model", rel(onnx_path), "-o", rel(profiles_file)])
    # resize, not the default pad: this ViT resamples its position embedding to any grid, so a resized
    # input keeps its content; the parity step below measures pad at the same sizes for comparison
    build = ["build-engine", rel(onnx_path), "-o", rel(bundle), "--profiles", rel(profiles_file),
             "--policy", POLICY]
    step = demo.run("build-engine --precision auto", [
        *build, "--precision", "auto", "--calib-data", rel(images), "--calib-samples", "8" if q else "48",
        "--max-drop", "0.02",
    ], ok_codes=(0, 1))
    if step.rc != 0:
        if "does not do yet" not in step.output:
            demo.write_readme(failed=step, notes=notes)
            raise SystemExit(f"demo: step {step.index} (build-engine) failed; see {rel(out)}/logs")
        demo.total += 1
        notes.append("build-engine in this checkout cannot do `--precision auto` yet (INT8 calibration hook "
                     "missing, see step 4): the bundle below is fp32.")
        demo.run("build-engine --precision fp32", [*build, "--precision", "fp32"])
    demo.run("inspect the bundle", ["inspect", rel(bundle)])
    _, listing = write_run_images(run_dir, bundle)
    demo.python_step("held-out digits of 5 sizes", "python -c '...examples.data.digits_at(...)'  # digitL_HxW.png",
                     lambda: listing)
    demo.run("run on images", ["run", rel(bundle), *sorted(rel(p) for p in run_dir.glob("*.png")), "--top-k", "3"])
    # the quick run's sample count must leave room for one flipped digit under the 0.05 top-1 gate
    # (with 8 samples one INT8 flip is a drop of 0.125: seen on a CPU without VNNI, where auto picks int8)
    demo.run("parity on labeled digits", [
        "parity", rel(bundle), "--reference", FACTORY, *model_args, *ckpt_args, "--data", "digits",
        "--samples", "32" if q else "96", "--min-cosine", "0.99", "--max-top1-drop", "0.05",
        "--threads", "2", "-o", rel(out / "parity"),
    ])
    outside = outside_sizes(out / "parity" / "parity.json")
    if outside:
        demo.run(f"parity outside the profiles, policy {OTHER_POLICY}", [
            "parity", rel(bundle), "--reference", FACTORY, *model_args, *ckpt_args, "--data", "digits",
            "--samples", "8" if q else "96", "--sizes", ",".join(outside), "--policy", OTHER_POLICY,
            "--threads", "2", "-o", rel(out / f"parity-{OTHER_POLICY}"),
        ])
    demo.run("bench", [
        "bench", rel(bundle), "--reference", FACTORY, *model_args, *ckpt_args, "--threads", "2",
        "--runs", "3" if q else "30", "--warmup", "1" if q else "3", "-o", rel(out / "bench"),
    ])
    if not args.no_real:
        from examples import demo_real

        demo_real.run(demo, out)
    readme = demo.write_readme(notes=notes)
    total = time.perf_counter() - demo.t0
    print(f"\ndone in {total:.0f} s: {rel(readme)} (tables, plots, every command's output)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
