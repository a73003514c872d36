"""Report helpers: Markdown tables, number formatting, and the two figures drawn from report dicts
(mixed-precision bundles, refused sizes, PyTorch curves) without running any model."""

from __future__ import annotations

import pytest
from PIL import Image

from mrdeploy.report import _curves, _runs, fmt, md_table, plot_bench, plot_parity

PROFILES = [
    {"name": "small", "backend": "onnxruntime", "precision": "int8", "min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 96, 96]},
    {"name": "large", "backend": "onnxruntime", "precision": "fp32", "min": [1, 3, 128, 128], "opt": [1, 3, 160, 160], "max": [1, 3, 192, 192]},
]


def prow(size, side, target, series, **kw):
    base = {"size": size, "side": side, "target": target, "series": series, "reference": None, "accuracy": None,
            "cosine": None, "top1_agreement": None, "served": False, "action": None, "profile": None}
    base.update(kw)
    return base


def parity_dict():
    rows = []
    for side, prof, prec, action in ((48, "small", "int8", "pad"), (64, "small", "int8", "exact"),
                                     (96, "small", "int8", "exact"), (160, "large", "fp32", "exact")):
        size = f"{side}x{side}"
        rows.append(prow(size, side, "pytorch", "pytorch fp32", accuracy=0.9))
        rows.append(prow(size, side, "onnx", "onnx fp32", reference="pytorch", accuracy=0.9, cosine=1.0))
        rows.append(prow(size, side, "bundle", f"bundle {prec}", reference="onnx", accuracy=0.85, cosine=0.998,
                         served=True, action=action, profile=prof))
    rows.append(prow("96x96", 96, "bundle", "bundle fp32", reference="onnx", accuracy=0.9, cosine=1.0,
                     served=False, action="exact", profile="large"))  # an overlapping profile, not served
    rows.append(prow("224x224", 224, "bundle", "bundle", action="refused"))
    return {"model": "m", "task": "classification", "labeled": True, "data": "digits", "profiles": PROFILES, "rows": rows}


def test_md_table_and_fmt():
    assert md_table(["a", "b"], [[1, None], ["x", 2.5]], "lr") == (
        "| a | b |\n| --- | ---: |\n| 1 |  |\n| x | 2.5 |"
    )
    assert fmt(None) == "-" and fmt(0.5) == "0.5000" and fmt(0.123456, 6) == "0.123456"
    assert fmt(1234.5) == "1.234e+03" and fmt(3e-7, 6) == "3.00000e-07" and fmt(0.0) == "0.0000"


def test_curves_one_point_per_size_served_row_wins():
    curves = _curves(parity_dict()["rows"], "accuracy")
    assert sorted(curves) == ["bundle fp32", "bundle int8", "onnx fp32", "pytorch fp32"]
    assert curves["bundle int8"] == [(48, 0.85, "s", "small"), (64, 0.85, "o", "small"), (96, 0.85, "o", "small")]
    assert curves["bundle fp32"] == [(96, 0.9, "o", "large"), (160, 0.85, "o", "large")]
    assert curves["onnx fp32"][0] == (48, 0.9, "o", None)
    # lines only join sizes served by the same profile
    assert [[p[0] for p in run] for run in _runs([(1, 0, "o", "a"), (2, 0, "o", "a"), (3, 0, "o", "b"), (4, 0, "o", "a")])] == [
        [1, 2], [3], [4]]
    cos = _curves(parity_dict()["rows"], "cosine", transform=lambda c: 1 - c)
    assert "pytorch fp32" not in cos  # nothing to compare PyTorch with
    assert cos["bundle int8"][0][1] == pytest.approx(0.002)


def test_plots_are_written_and_readable(tmp_path):
    p = plot_parity(parity_dict(), tmp_path / "parity.png")
    bench = {
        "model": "m", "threads": 2, "runs": 5, "batch": 1, "profiles": PROFILES,
        "rows": [{"series": s, "side": side, "p50_ms": v, "p90_ms": v * 1.2}
                 for side in (64, 96, 160) for s, v in (("bundle onnxruntime int8", side / 50),
                                                        ("onnx dynamic fp32", side / 40),
                                                        ("pytorch eager fp32", side / 20))],
        "sizes": [{"side": side, "speedup_vs_onnx": 1.25, "speedup_vs_pytorch": 2.5} for side in (64, 96, 160)],
    }
    b = plot_bench(bench, tmp_path / "bench.png")
    for path in (p, b):
        assert path.stat().st_size > 10_000
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 900 and im.size[1] > 400
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bench.png", "parity.png"]  # no temp files left
