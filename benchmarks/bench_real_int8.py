"""INT8 on real pretrained models and real photos, next to plain ONNX Runtime, in one run.

Per model (EfficientNet-Lite1/Lite2, ImageNet weights) and per evaluation size, top-1 agreement with
the FP32 model on photo crops that calibration never saw (examples/real/photos.py: the right halves):

- ``plain ORT``: ``quant_pre_process`` + ``quantize_static`` as ORT's docs show it (QDQ, per-channel,
  uint8 activations, int8 weights, MinMax), calibrated on the same crops at one size (224);
- ``one size``: mrdeploy's quantizer, calibrated once at 224 and used at every size (what peers do);
- ``no bias corr``: mrdeploy's bundle, each profile calibrated at its own sizes, no budget, built with
  ``--no-bias-correction``;
- ``per profile``: the same bundle with bias correction (the default: calibration/bias.py);
- ``budget D``: the same with ``--max-drop D`` for each D of ``--max-drop`` (default 0.03 and 0.10), held
  out data ``--heldout`` crops (default 40) of the calibration halves, built with ``--precision auto``
  (``--budget-precision``): a profile where no INT8 model meets the budget (or INT8 is not 1.05x
  faster than FP32) is served in FP32, and the listing after the tables says which; with ``--budget-precision
  int8`` the build refuses such a profile and the column shows ``refused``.

``fp32+noise`` is the metric's noise floor: the FP32 model itself on the same crops plus Gaussian noise of
one grey level. Many crops are textures, microscopy or astronomy, far from ImageNet's classes, where
FP32's top two classes are close: such a crop's class flips under noise no eye can see, so the first
table (all crops) bounds what any INT8 model can reach. The second table keeps the *stable* crops, whose
FP32 class survives three draws of that noise: there top-1 agreement measures INT8, not the crops.

Every INT8 model runs in ONNX Runtime with the session entries bundles record for INT8 profiles.

    .venv/bin/python benchmarks/bench_real_int8.py [--models lite1,lite2] [--eval 80] [--max-drop 0.03]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROFILES = ["p160=128-192@160", "p224=192-256@224", "p288=256-320@288"]
SIZES = [128, 160, 192, 224, 256, 288, 320]


def session(path, int8: bool):
    from mrdeploy._ort import cpu_session
    from mrdeploy.calibration.evaluate import INT8_SESSION_CONFIG

    return cpu_session(path, config=INT8_SESSION_CONFIG if int8 else None)


def run(sess, x):
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def plain_ort(src: Path, calib: np.ndarray, out: Path) -> Path:
    import contextlib
    import io

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    pre = out.with_suffix(".pre.onnx")
    with contextlib.redirect_stdout(io.StringIO()):
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def noise(shape, seed: int) -> np.ndarray:
    """Gaussian noise of one grey level (1/255 of the pixel range) in the normalized input's units."""
    from examples.real.models import LITE_STD

    std = np.asarray(LITE_STD, np.float32).reshape(1, 3, 1, 1)
    return (np.random.default_rng(seed).normal(0, 1 / 255, shape) / std).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lite1,lite2")
    ap.add_argument("--calib", type=int, default=30, help="calibration photo crops (the budget holds out a third)")
    ap.add_argument("--eval", type=int, default=80, help="evaluation photo crops per size")
    ap.add_argument("--max-drop", default="0.03,0.10", help="comma-separated budgets, one bundle each")
    ap.add_argument("--budget-precision", choices=("int8", "auto"), default="auto",
                    help="--precision of the budget builds: auto (default) serves fp32 where no INT8 model meets "
                         "the budget or is faster; int8 refuses such a profile")
    ap.add_argument("--heldout", type=int, default=40,
                    help="held-out crops for the budget builds (--heldout-data: other crops of the calibration "
                    "halves, seed 1); 0: the budget holds out a third of the calibration crops")
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    import mrdeploy
    from examples.real import photos
    from examples.real.models import LITE_MEAN, LITE_STD
    from mrdeploy.calibration.api import calibrate_profile
    from mrdeploy.errors import CalibrationError
    from mrdeploy.runtime.profiles import make_profile, parse_profile

    work = Path(tempfile.mkdtemp(prefix="bench_real_int8."))
    calib_dir = photos.write_folder(work / "calib", "calib", args.calib)
    held_dir = photos.write_folder(work / "heldout", "calib", args.heldout, seed=1) if args.heldout else None
    print(f"work dir {work}; {args.calib} calibration crops, {args.eval} evaluation crops per size, "
          + (f"{args.heldout} held-out crops for the budget" if held_dir else "the budget holds out a third"))
    for key in args.models.split(","):
        t0 = time.perf_counter()
        src = work / f"{key}.onnx"
        mrdeploy.export(f"examples/real/models.py:efficientnet_{key}", (1, 3, 224, 224), src, divisor=32,
                        min_size=96, max_size=512, mean=LITE_MEAN, std=LITE_STD, task="classification",
                        validate=False, name=f"efficientnet_{key}")
        calib224 = photos.batch("calib", args.calib, (224, 224), LITE_MEAN, LITE_STD)
        plain = plain_ort(src, calib224, work / f"{key}.plain.onnx")
        one = calibrate_profile(src, make_profile(parse_profile("224"), {"input": 3}, divisor=32), calib_dir,
                                qdq_path=work / f"{key}.one.onnx", samples=args.calib, heldout=0).qdq_path
        common = dict(precision="int8", calib_data=calib_dir, quiet=True)
        t1 = time.perf_counter()
        mrdeploy.build_engine(src, work / f"{key}.raw", PROFILES, bias_correction=False, **common)
        times = [f"per-profile build without bias correction {time.perf_counter() - t1:.0f} s"]
        t1 = time.perf_counter()
        mrdeploy.build_engine(src, work / f"{key}.per", PROFILES, **common)
        runners = {"no bias corr": mrdeploy.load(work / f"{key}.raw"), "per profile": mrdeploy.load(work / f"{key}.per")}
        times.append(f"per-profile build {time.perf_counter() - t1:.0f} s")
        refused = {}
        for d in [float(v) for v in args.max_drop.split(",")]:
            t2 = time.perf_counter()
            try:
                mrdeploy.build_engine(src, work / f"{key}.budget{d}", PROFILES, max_drop=d, heldout_data=held_dir,
                                      **{**common, "precision": args.budget_precision})
                runners[f"budget {d:g}"] = mrdeploy.load(work / f"{key}.budget{d}")
            except CalibrationError as e:
                refused[f"budget {d:g}"] = str(e)
            times.append(f"--max-drop {d:g} build {time.perf_counter() - t2:.0f} s")
        sessions = {"fp32": session(src, False), "plain ORT": session(plain, True), "one size": session(one, True)}
        print(f"\nEfficientNet-{key} ({', '.join(times)}, 2 cores)")
        cols = ["plain ORT", "one size", *runners, *refused]
        head = f"{'size':>8} {'profile':>8} {'fp32+noise':>11} " + " ".join(f"{c:>12}" for c in cols)
        tables = {"all": [], "stable": []}
        worst = {k: dict.fromkeys(cols, 1.0) for k in tables}
        for s in SIZES:
            x = photos.batch("eval", args.eval, (s, s), LITE_MEAN, LITE_STD)
            ref = run(sessions["fp32"], x).argmax(1)
            # the noise floor: FP32 itself on the same crops plus noise of one grey level (std), 3 draws;
            # "stable" crops keep their FP32 class under all three (INT8 agreement is meaningful there)
            noisy = [run(sessions["fp32"], x + noise(x.shape, k)).argmax(1) == ref for k in range(3)]
            stable = np.logical_and.reduce(noisy)
            hits = {c: run(sessions[c], x).argmax(1) == ref for c in ("plain ORT", "one size")}
            for c, r in runners.items():
                hits[c] = np.array([r(x[i:i + 1]).argmax() == ref[i] for i in range(len(x))])
            served = runners["per profile"].select(1, s, s).profile.name
            for kind, mask in (("all", np.ones(len(x), bool)), ("stable", stable)):
                row = {c: float(h[mask].mean()) for c, h in hits.items()}
                for c in row:
                    worst[kind][c] = min(worst[kind][c], row[c])
                floor = float(noisy[0][mask].mean())
                tables[kind].append(f"{s:>5}x{s:<3} {served:>8} {floor:>11.3f} " + " ".join(
                    f"{row[c]:>12.3f}" if c in row else f"{'refused':>12}" for c in cols) + f"   n={int(mask.sum())}")
        for kind, title in (("all", f"all {args.eval} evaluation crops"),
                            ("stable", "stable crops only (FP32's class survives one grey level of noise)")):
            print(f"  top-1 agreement with FP32, {title}:")
            print(head)
            print("\n".join(tables[kind]))
            print(f"{'worst':>8} {'':>8} {'':>11} " + " ".join(
                f"{worst[kind][c]:>12.3f}" if c not in refused else f"{'refused':>12}" for c in cols))
        for c, why in refused.items():
            print(f"  {c}: {why}")
        for name, r in runners.items():
            for e in r.manifest.profiles:
                c = e.calibration or {}
                chosen = (e.measurements or {}).get("reason")
                at = f" at {c['drop_at']}" if c.get("drop_at") else ""
                print(f"  {name} {e.name}: {e.precision}, held-out drop {c.get('drop')}{at} (estimate "
                      f"{c.get('estimated_drop')}, observed {c.get('observed_drop')}) on {c.get('heldout_rows')} "
                      "(stable, all) pairs, "
                      f"{len(c.get('float_nodes', []))} blocks float, {c.get('weight_bits')}-bit weights"
                      + (f"; precision auto: {chosen}" if chosen else ""))
            r.close()
        print(f"  ({time.perf_counter() - t0:.0f} s for this model)")


if __name__ == "__main__":
    main()
