"""examples/demo.py --quick end to end (the exported ViT from the session fixture replaces step 1): every
step runs as a real `mrdeploy` command and the report folder has the tables, plots and outputs."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from examples import demo


@pytest.fixture(scope="module")
def report_dir(exported, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    assert demo.main(["--out", str(out), "--quick", "--no-real", "--onnx", str(exported("vit"))]) == 0
    return out


def test_demo_report_has_tables_plots_and_every_step(report_dir):
    readme = (report_dir / "README.md").read_text()
    assert readme.startswith("# mrdeploy demo report: the example ViT from PyTorch to a 3-profile bundle")
    for heading in ("## Steps", "## The bundle", "## Parity per resolution", "### Sizes outside every profile: resize or pad",
                    "## Latency per resolution", "## Every command and its output"):
        assert heading in readme
    assert "![parity vs resolution](parity/parity.png)" in readme
    assert "![latency vs resolution](bench/bench.png)" in readme
    for cmd in ("$ mrdeploy profiles plan --sizes-from", "$ mrdeploy build-engine", "$ mrdeploy inspect",
                "$ mrdeploy run", "$ mrdeploy parity", "$ mrdeploy bench"):
        assert cmd in readme, cmd
    for png in ("parity/parity.png", "bench/bench.png"):
        with Image.open(report_dir / png) as im:
            assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 300
    logs = sorted(p.name for p in (report_dir / "logs").iterdir())
    assert logs[0].startswith("01-") and any("parity" in n for n in logs) and any("bench" in n for n in logs)


def test_demo_bundle_parity_and_bench_results(report_dir):
    manifest = json.loads((report_dir / "bundle" / "manifest.json").read_text())
    assert len(manifest["profiles"]) == 3
    parity = json.loads((report_dir / "parity" / "parity.json").read_text())
    assert parity["passed"] is True and parity["labeled"] is True and parity["data"].startswith("digits")
    assert parity["references"]["pytorch"].endswith("resformer.py:resformer_tiny")
    exact = [r for r in parity["rows"] if r["target"] == "bundle" and r["action"] == "exact"]
    assert len({r["profile"] for r in exact}) == 3 and all(r["cosine"] > 0.99 for r in exact)
    assert manifest["policy"] == "resize" and parity["policy"] == "resize"
    pad = json.loads((report_dir / "parity-pad" / "parity.json").read_text())
    outside = {r["size"] for r in parity["rows"] if r["target"] == "bundle" and not r["in_profile"]}
    assert pad["policy"] == "pad" and set(pad["sizes"]) == outside and len(outside) >= 2
    assert {r["action"] for r in pad["rows"] if r["target"] == "bundle"} <= {"pad", "refused"}
    assert {r["action"] for r in parity["rows"] if r["size"] in outside and r["target"] == "bundle"} == {"resize"}
    bench = json.loads((report_dir / "bench" / "bench.json").read_text())
    assert {r["target"] for r in bench["rows"]} == {"bundle", "onnx", "pytorch"}
    assert all(r["p50_ms"] > 0 for r in bench["rows"]) and bench["threads"] == 2
    assert all(s["speedup_vs_pytorch"] > 0 and s["speedup_vs_onnx"] > 0 for s in bench["sizes"])


def test_demo_run_step_serves_five_sizes(report_dir):
    log = next(p for p in (report_dir / "logs").iterdir() if "run" in p.name and p.name[3:].startswith("run")).read_text()
    served = [line for line in log.splitlines() if " -> profile " in line]
    assert len(served) == 5
    assert sum("exact" in line for line in served) == 4 and sum(", resize to " in line for line in served) == 1
