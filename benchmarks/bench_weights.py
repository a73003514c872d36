"""Weights stored once: bundle size on disk with and without the shared weights file, on a real model.

EfficientNet-Lite1 (ImageNet weights) is exported and built with three profiles (two ranged, one static)
per backend and precision: ONNX Runtime fp32 and int8, OpenVINO fp32 and int8 (int8 calibrated per
profile on 30 real photo crops). Each bundle is built with ``share_weights=False`` (every graph with its
own weights, as before) and then shared with ``exporter/weights.py``'s pass on a copy, so both hold
the same engines. Printed: MB on disk for each, the ratio, and the largest difference between the two
bundles' outputs on real photo crops at five sizes (expected: 0, the same bytes read from elsewhere).

    .venv/bin/python benchmarks/bench_weights.py [--kinds onnxruntime:fp32,openvino:int8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROFILES = ["small=96-160@128", "s224=224", "large=256-320@288"]
KINDS = "onnxruntime:fp32,onnxruntime:int8,openvino:fp32,openvino:int8"
SIZES = ((96, 96), (128, 160), (224, 224), (256, 300), (320, 320))


def disk_mb(path: Path) -> float:
    return sum(q.stat().st_size for q in path.rglob("*") if q.is_file()) / 1e6


def share_copy(own: Path, out: Path) -> list[str]:
    """``out``: a copy of ``own`` with the shared-weights pass applied, its manifest rewritten."""
    from dataclasses import replace

    from mrdeploy.exporter.weights import share_weights
    from mrdeploy.runtime.manifest import Manifest

    shutil.copytree(own, out)
    m = Manifest.read(out)
    notes: list[str] = []
    source, entries = share_weights(out, m.source, m.profiles, notes)
    replace(m, source=source, profiles=entries).write(out)
    return notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default=KINDS, help=f"backend:precision pairs (default {KINDS})")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import mrdeploy.runtime as rt
    from examples.real import models as real
    from examples.real import photos
    from mrdeploy.exporter.build import build_bundle

    work = Path(tempfile.mkdtemp(prefix="bench_weights."))
    onnx = work / "lite1.onnx"
    real.export_lite1(onnx)
    calib = photos.write_folder(work / "calib", "calib", 30)
    xs = [photos.batch("eval", 1, size, real.LITE_MEAN, real.LITE_STD, seed=k) for k, size in enumerate(SIZES)]
    print(f"EfficientNet-Lite1, profiles {' '.join(PROFILES)}; source model {onnx.stat().st_size / 1e6:.1f} MB")
    print(f"{'backend':<12} {'prec':<5} {'own MB':>8} {'shared MB':>10} {'ratio':>6}  {'max |diff|':>10}  note")
    rows = []
    for kind in args.kinds.split(","):
        backend, precision = kind.split(":")
        t0 = time.perf_counter()
        own = work / f"{backend}-{precision}.own"
        extra = dict(calib_data=calib, calib_samples=30) if precision == "int8" else {}
        build_bundle(onnx, own, PROFILES, backend=backend, precision=precision, threads=2, quiet=True,
                     share_weights=False, **extra)
        shared = work / f"{backend}-{precision}.shared"
        notes = share_copy(own, shared)
        with rt.load(own, threads=2) as a, rt.load(shared, threads=2) as b:
            diff = max(float(np.abs(a(x) - b(x)).max()) for x in xs)
        row = {"backend": backend, "precision": precision, "own_mb": disk_mb(own), "shared_mb": disk_mb(shared),
               "max_abs_diff": diff, "notes": notes, "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"{backend:<12} {precision:<5} {row['own_mb']:8.1f} {row['shared_mb']:10.1f} "
              f"{row['own_mb'] / row['shared_mb']:5.2f}x  {diff:10.1e}  {notes[0] if notes else 'nothing shared'}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
