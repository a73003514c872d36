"""benchmarks/bench_peers.py --quick on one small model at one size: every target measured in its own
process, the table's structure, agreement in [0, 1], the JSON and the plot. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("openvino", reason="needs the `peers` extra (openvino): pip install -e '.[peers]'")
pytest.importorskip("nncf", reason="needs the `peers` extra (nncf): pip install -e '.[peers]'")

PEER_LABELS = ["PyTorch eager", "ORT dynamic", "plain ORT INT8", "OpenVINO default", "OpenVINO on ORT Q/DQ",
               "OpenVINO NNCF INT8"]


def test_quick_run_one_model_one_size(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_peers.py"), "--quick", "--models", "cnn", "--sizes", "64",
           "--calls", "3", "--warmup", "1", "--threads", "1", "--ours", "onnxruntime:fp32,nosuch:fp32",
           "--exporter", "torchscript", "--out", str(out), "--work", str(tmp_path / "work")]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    text = p.stdout
    # a backend mrdeploy refuses is skipped with a note, the rest is measured
    assert "note: cnn: skipped ours nosuch:fp32" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("  64x64 ")]
    labels = PEER_LABELS + ["ours onnxruntime fp32"]
    assert len(rows) == len(labels), text
    for label in labels:
        assert sum(label in r for r in rows) == 1, (label, text)
    assert sum(r[8] == "*" for r in rows) == 1  # exactly one fastest peer is marked

    data = json.loads((out / "peers.json").read_text())
    assert data["sizes"] == [64] and data["threads"] == 1 and data["rounds"] == 1 and data["calls"] == 3
    assert any("nosuch:fp32" in n for n in data["notes"])
    (model,) = data["models"]
    assert model["model"] == "cnn"
    assert [r["target"] for r in model["rows"]] == model["targets"]
    assert model["targets"][:6] == ["eager", "ort", "ort-int8", "ov", "ov-qdq", "ov-nncf"]
    assert model["targets"][6:] == ["ours:onnxruntime:fp32"]
    by = {r["target"]: r for r in model["rows"]}
    for r in model["rows"]:
        assert r["error"] is None, r
        assert r["ms"] > 0 and len(r["round_ms"]) == 1 and r["noise"][0] <= r["ms"] <= r["noise"][1]
        assert 0.0 <= r["top1_agreement"] <= 1.0, r
        assert r["x_eager"] == pytest.approx(by["eager"]["ms"] / r["ms"])
        assert r["x_fastest_peer"] == pytest.approx(by[r["fastest_peer"]]["ms"] / r["ms"])
    assert by["eager"]["top1_agreement"] == 1.0 and by["eager"]["x_eager"] == pytest.approx(1.0)
    # FP32 runtimes of the same graph agree with PyTorch on nearly every crop
    assert by["ort"]["top1_agreement"] >= 0.85 and by["ours:onnxruntime:fp32"]["top1_agreement"] >= 0.85
    fastest = min((r for r in model["rows"] if r["target"] != "eager" and not r["target"].startswith("ours")),
                  key=lambda r: r["ms"])
    assert by["eager"]["fastest_peer"] == fastest["target"]
    assert (out / "peers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ours_items_carry_an_optional_budget():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_peers import _ours_name, _parse_ours, label

    items = _parse_ours("openvino:int8, auto:auto@0.03", 0.1)
    assert items == [("openvino", "int8", 0.1), ("auto", "auto", 0.03)]
    assert [_ours_name(*o) for o in items] == ["ours:openvino:int8@0.1", "ours:auto:auto@0.03"]
    assert label("ours:auto:auto@0.03") == "ours auto auto max-drop 0.03"
    assert _parse_ours("onnxruntime:fp32", None) == [("onnxruntime", "fp32", None)]
    for bad in ("auto", "auto:auto@x", ":int8"):
        with pytest.raises(SystemExit, match="expected BACKEND:PRECISION or BACKEND:PRECISION@MAXDROP items"):
            _parse_ours(bad, None)
