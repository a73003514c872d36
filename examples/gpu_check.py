"""Check TensorRT engines against ONNX Runtime on a GPU machine.

Exports an example model (or takes an ONNX file), builds every profile with the tensorrt backend, runs
each engine at its profile's min, opt and max shapes on random inputs and compares with ONNX Runtime
(CPU) on the source model. Prints a table: profile, point, shape, max abs error, cosine, ok.

    python examples/gpu_check.py --example vit --profile small=32-96@64 --profile 128 --precision fp16
    python examples/gpu_check.py --model model.onnx --profile 224 --profile 160-320@256

Needs TensorRT 10+ (or 11), cuda-python and a CUDA GPU; elsewhere it stops at once with a clear
BackendUnavailable message (before exporting or building anything).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PROFILES = ["small=32-96@64", "128", "large=128-256@192"]
TOLERANCE = {"fp32": (1e-3, 0.9999), "fp16": (5e-2, 0.999)}  # (max abs err relative to max |ref|, cosine)


def check_environment() -> None:
    """BackendUnavailable unless TensorRT and a CUDA GPU are here."""
    from mrdeploy.exporter.tensorrt_build import gpu_info, import_tensorrt

    import_tensorrt()
    gpu_info()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--example", default="vit", help="vit, cnn or seg (exported here)")
    src.add_argument("--model", help="an ONNX model instead of an example")
    ap.add_argument("--profile", action="append", help=f"profiles (default: {' '.join(DEFAULT_PROFILES)})")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    ap.add_argument("--workspace", type=int, default=1024, help="MiB")
    ap.add_argument("--out", help="bundle directory (default: a temporary one)")
    args = ap.parse_args(argv)

    from mrdeploy.errors import MrdeployError

    try:
        check_environment()
    except MrdeployError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2

    import numpy as np

    from mrdeploy.exporter.build import build_bundle
    from mrdeploy.exporter.specialize import check_points, compare, cpu_session, random_feeds
    from mrdeploy.runtime import load

    work = Path(tempfile.mkdtemp(prefix="mrdeploy-gpu-check-"))
    if args.model:
        model = Path(args.model)
    else:
        from examples.zoo import export_example

        model = export_example(args.example, work / f"{args.example}.onnx", validate=False)
    bundle = Path(args.out) if args.out else work / "bundle"
    result = build_bundle(
        model, bundle, args.profile or DEFAULT_PROFILES, backend="tensorrt", precision=args.precision,
        workspace=args.workspace,
    )
    print(result.table())
    runner = load(bundle)
    ref = cpu_session(model, threads=None)
    names = [o.name for o in ref.get_outputs()]
    rel, min_cos = TOLERANCE[args.precision]
    failures = 0
    print(f"\n{'profile':<18} {'at':<4} {'shape':<22} {'output':<12} {'max abs err':>12} {'cosine':>10}  ok")
    for profile in runner.profiles:
        for label, shapes in check_points(profile):
            feeds = random_feeds(ref, shapes)
            want = dict(zip(names, ref.run(names, feeds)))
            got = runner.run_profile(profile.name, feeds)
            for n in names:
                err, cos = compare(want[n], got[n])
                ok = err <= rel * max(1.0, float(np.abs(want[n]).max())) and cos >= min_cos
                failures += not ok
                shape = ",".join("x".join(map(str, s)) for s in shapes.values())
                print(f"{profile.name:<18} {label:<4} {shape:<22} {n:<12} {err:>12.3g} {cos:>10.6f}  {'yes' if ok else 'NO'}")
    print(f"\n{'all engines match ONNX Runtime' if not failures else f'{failures} mismatches'} (bundle: {bundle})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
