"""mrdeploy bench on a small hand-made bundle: fields, sane positive numbers, interleaving, the plot.
No timing assertions beyond "positive and ordered" (speed is for benchmarks/, not unit tests)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mrdeploy.bench import bench, time_interleaved
from mrdeploy.errors import InputError
from tests.bundles import make_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bench") / "cls", "cls")


def test_time_interleaved_rotates_order_and_excludes_warmup():
    calls_log = []
    calls = {name: (lambda n=name: calls_log.append(n)) for name in ("a", "b", "c")}
    times = time_interleaved(calls, runs=3, warmup=2)
    assert calls_log[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up, untimed
    assert calls_log[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # each target first once
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v)


def test_bench_json_markdown_and_plot(bundle, tmp_path):
    report = bench(bundle, sizes="48,128,200", threads=1, runs=5, warmup=1, out=tmp_path)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["threads"] == 1 and data["runs"] == 5 and data["warmup"] == 1 and data["batch"] == 1
    assert data["machine"]["cores"] >= 1 and "onnxruntime" in data["machine"]["versions"]
    assert [s["size"] for s in data["sizes"]] == ["48x48", "128x128", "200x200"]
    assert [(s["profile"], s["action"]) for s in data["sizes"]] == [("small", "exact"), ("large", "exact"), ("s224", "pad")]
    assert {(r["size"], r["target"]) for r in data["rows"]} == {
        (s, t) for s in ("48x48", "128x128", "200x200") for t in ("bundle", "onnx")
    }
    for r in data["rows"]:
        assert r["runs"] == 5
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["mean_ms"] > 0 and r["throughput"] == pytest.approx(1e3 / r["mean_ms"])
        assert r["series"] in ("bundle onnxruntime fp32", "onnx dynamic fp32")
    for s in data["sizes"]:
        by = {r["target"]: r for r in data["rows"] if r["size"] == s["size"]}
        assert s["speedup_vs_onnx"] == pytest.approx(by["onnx"]["p50_ms"] / by["bundle"]["p50_ms"])
        assert s["speedup_vs_pytorch"] is None
    md = (tmp_path / "bench.md").read_text()
    assert "| 200x200 | s224 (fp32, pad) |" in md and "1 thread(s) for every target" in md
    with Image.open(tmp_path / "bench.png") as im:
        assert im.format == "PNG" and im.size[0] > 600
    assert report.rows[0].p50_ms > 0


def test_bench_cli(bundle, tmp_path, capsys):
    from mrdeploy.cli import main

    main(["bench", str(bundle), "--sizes", "64,96x160", "--threads", "1", "--runs", "3", "--warmup", "0",
          "-o", str(tmp_path), "--no-plot"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "p50 latency in ms, 1 thread(s), 3 runs per size and target"
    assert out[2].split()[:4] == ["64x64", "small", "(fp32,", "exact)"] and out[2].endswith("x")
    assert out[3].split()[:2] == ["96x160", "large"]
    assert (tmp_path / "bench.json").is_file() and not (tmp_path / "bench.png").exists()


def test_bench_bad_arguments(bundle, tmp_path):
    with pytest.raises(InputError, match="expected runs >= 1, warmup >= 0, batch >= 1, got runs 0"):
        bench(bundle, sizes="48", runs=0)
    with pytest.raises(InputError, match="every size was refused by the bundle's policy 'error'"):
        bench(bundle, sizes="80", runs=1, policy="error")
