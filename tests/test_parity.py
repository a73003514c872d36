"""mrdeploy parity on small hand-made bundles (tests/bundles.py): passes on a good bundle, fails with a
precise message on a damaged one (API, CLI and assert_parity), writes its JSON / Markdown / PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from mrdeploy.errors import InputError
from mrdeploy.evaldata import EvalData, point_label
from mrdeploy.parity import ParityFailure, default_sizes, parity
from mrdeploy.runtime.manifest import Manifest, sha256_file
from mrdeploy.testing import assert_parity
from tests.bundles import make_bundle

SIZES_TINY = ["16x16", "32x32", "48x48", "64x64", "80x80", "96x96", "96x160", "128x128", "160x160",
              "192x192", "224x224", "240x240"]


def damage_profile(bundle: Path, profile: str, initializer: str = "w1", factor: float = 1.5) -> None:
    """Scale one initializer of a profile's artifact and re-record its sha256: the bundle still loads
    (hashes match) but that profile computes something else."""
    m = Manifest.read(bundle)
    e = m.entry(profile)
    model = onnx.load(str(bundle / e.artifact))
    for init in model.graph.initializer:
        if init.name == initializer:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), initializer))
            break
    else:
        raise AssertionError(f"no initializer {initializer} in {e.artifact}")
    e.artifact = f"profiles/{e.name}.damaged.onnx"  # its own file: identical artifacts are stored once
    onnx.save(model, str(bundle / e.artifact))
    e.sha256 = sha256_file(bundle / e.artifact)
    m.write(bundle)


@pytest.fixture(scope="module")
def cls_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "cls", "cls")


@pytest.fixture(scope="module")
def damaged_cls(tmp_path_factory) -> Path:
    b = make_bundle(tmp_path_factory.mktemp("b") / "cls_damaged", "cls")
    damage_profile(b, "large")
    return b


def test_default_sizes_cover_profiles_between_and_outside(cls_bundle):
    pts = default_sizes(Manifest.read(cls_bundle))
    # small=32-64@48, large=96-160@128, s224=224; valid 16..512, divisor 1
    assert [point_label(p) for p in pts] == SIZES_TINY


def test_parity_passes_on_a_good_bundle_and_writes_reports(cls_bundle, tmp_path):
    report = parity(cls_bundle, samples=4, out=tmp_path, min_cosine=0.9999, max_abs_error=1e-4)
    assert report.passed and report.failures == []
    assert report.sizes == SIZES_TINY
    bundle_rows = [r for r in report.rows if r.target == "bundle"]
    exact = [r for r in bundle_rows if r.action == "exact"]
    # every profile's artifact is the source model itself: exact sizes agree to the bit
    assert {r.profile for r in exact} == {"small", "large", "s224"}
    assert all(r.max_abs == 0.0 and r.cosine == pytest.approx(1.0) and r.top1_agreement == 1.0 for r in exact)
    served = {r.size: (r.profile, r.action) for r in bundle_rows if r.served}
    assert served["16x16"] == ("small", "pad") and served["80x80"] == ("large", "pad")
    assert served["192x192"] == ("s224", "pad") and "240x240" not in served  # above every max: refused
    refused = [r for r in bundle_rows if r.size == "240x240"]
    assert len(refused) == 1 and refused[0].action == "refused" and refused[0].cosine is None

    data = json.loads((tmp_path / "parity.json").read_text())
    assert data["passed"] is True and data["task"] == "classification" and data["policy"] == "pad"
    assert data["thresholds"] == {"min_cosine": 0.9999, "max_abs_error": 0.0001}
    assert [p["name"] for p in data["profiles"]] == ["small", "large", "s224"]
    assert data["profiles"][1]["min"] == [1, 3, 96, 96]
    row = next(r for r in data["rows"] if r["size"] == "128x128" and r["target"] == "bundle")
    assert row["profile"] == "large" and row["reference"] == "onnx" and row["samples"] == 4
    md = (tmp_path / "parity.md").read_text()
    assert "result: **PASS**" in md and "| 240x240 |" in md and "refused by policy 'pad'" in md
    assert "![parity vs resolution](parity.png)" in md
    with Image.open(tmp_path / "parity.png") as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 300


def test_parity_fails_on_a_damaged_bundle_naming_sizes_and_metrics(damaged_cls):
    with pytest.raises(ParityFailure) as err:
        parity(damaged_cls, samples=4, max_abs_error=1e-3)
    report = err.value.report
    bad = {r.size for r in report.rows if r.failures}
    assert bad == {"96x96", "96x160", "128x128", "160x160"}  # exactly the damaged profile's exact sizes
    rows = {r.size: r for r in report.rows if r.failures}
    lines = str(err.value).splitlines()
    assert lines[0] == (
        "parity failed: 4 check(s) at 4 size(s) (96x96, 96x160, 128x128, 160x160); thresholds max_abs_error=0.001"
    )
    assert lines[1] == f"  96x96 bundle large (fp32, exact) vs onnx: max abs error {rows['96x96'].max_abs:.6g} > max 0.001"
    assert rows["96x96"].max_abs > 0.5
    # the undamaged profiles still agree exactly
    assert all(r.max_abs == 0.0 for r in report.rows if r.profile in ("small", "s224") and r.action == "exact")


def test_parity_cli_exits_non_zero_on_a_damaged_bundle(damaged_cls, cls_bundle, tmp_path, capsys):
    from mrdeploy.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["parity", str(damaged_cls), "--samples", "2", "--sizes", "48,128", "--min-cosine", "0.99999",
              "-o", str(tmp_path / "bad"), "--no-plot"])
    assert ex.value.code == 1
    err = capsys.readouterr().err
    assert "mrdeploy: error: parity failed: 1 check(s) at 1 size(s) (128x128); thresholds min_cosine=0.99999" in err
    assert "  128x128 bundle large (fp32, exact) vs onnx: cosine 0.9997" in err
    assert json.loads((tmp_path / "bad" / "parity.json").read_text())["passed"] is False

    main(["parity", str(cls_bundle), "--samples", "2", "--sizes", "48,128", "--min-cosine", "0.99999",
          "-o", str(tmp_path / "good"), "--no-plot"])
    out = capsys.readouterr().out
    assert "parity passed at 2 sizes (min_cosine=0.99999)" in out
    assert not (tmp_path / "good" / "parity.png").exists()


def test_assert_parity_is_a_one_line_test(cls_bundle, damaged_cls):
    report = assert_parity(cls_bundle, sizes=[48, 128], min_cosine=0.99999)
    assert report.passed and len([r for r in report.rows if r.target == "bundle"]) == 2
    with pytest.raises(AssertionError) as err:
        assert_parity(damaged_cls, sizes=[48, (96, 160)], min_cosine=0.99999)
    text = str(err.value)
    assert text.startswith("parity failed: 1 check(s) at 1 size(s) (96x160); thresholds min_cosine=0.99999\n")
    table = text.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["size", "model", "vs", "max", "abs", "cosine", "top-1", "agr", "drop"]
    fail = [line for line in table if line.endswith("FAIL")]
    assert len(fail) == 1 and fail[0].startswith("96x160") and "bundle large (fp32, exact)" in fail[0]


def test_segmentation_parity_and_resize_policy(tmp_path):
    b = make_bundle(tmp_path / "seg", "seg", profiles=["small=32-64@48", "large=96-128@112"], policy="resize")
    report = parity(b, samples=2, sizes="48,80,112,160", min_pixel_agreement=0.999, min_miou_agreement=0.999)
    served = {r.size: r for r in report.rows if r.served}
    assert served["48x48"].action == "exact" and served["112x112"].action == "exact"
    # outside: resized to the nearest opt and back; measured, not gated (check_outside off)
    assert served["80x80"].action == "resize" and served["160x160"].action == "resize"
    assert served["160x160"].pixel_agreement is not None and served["160x160"].pixel_agreement < 1.0
    assert served["48x48"].pixel_agreement == 1.0 and served["48x48"].miou_agreement == 1.0
    with pytest.raises(ParityFailure, match=r"160x160 bundle large \(fp32, resize\) vs onnx: pixel agreement"):
        parity(b, samples=2, sizes="48,160", min_pixel_agreement=0.999, check_outside=True)

    damage_profile(b, "small", "w2", 1.5)
    rep = parity(b, samples=2, sizes="48,112", raise_on_failure=False, min_pixel_agreement=0.999)
    row = next(r for r in rep.rows if r.target == "bundle" and r.size == "48x48")
    # the 1x1 head scaled by 1.5 (its bias not): argmax flips on some pixels of the damaged profile only
    assert 0.5 < row.pixel_agreement < 0.999 and row.miou_agreement < 0.999
    assert rep.failures == [f"48x48 bundle small (fp32, exact) vs onnx: pixel agreement {row.pixel_agreement:.6g} < min 0.999"]


def test_labeled_image_folder(tmp_path, cls_bundle):
    labels = ["airplane", "bird", "cat"]
    rng = np.random.default_rng(0)
    for i, name in enumerate(labels * 2):
        (tmp_path / "imgs" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    (tmp_path / "imgs" / "bird" / "broken.png").write_bytes(b"not a png")
    data = EvalData(tmp_path / "imgs", Manifest.read(cls_bundle).model, samples=10)
    assert data.labeled and "6 images, labeled by folder, 1 unreadable skipped" in data.name
    feeds, y = data.batch({"input": (32, 48)})
    assert feeds["input"].shape == (6, 3, 32, 48) and feeds["input"].dtype == np.float32
    assert sorted(y.tolist()) == [0, 0, 1, 1, 2, 2]
    report = parity(cls_bundle, data=str(tmp_path / "imgs"), sizes="48", samples=10)
    onnx_row = next(r for r in report.rows if r.target == "onnx")
    bundle_row = next(r for r in report.rows if r.target == "bundle")
    assert report.labeled and onnx_row.accuracy == bundle_row.accuracy and bundle_row.drop == 0.0


def test_bad_inputs_are_clear(cls_bundle, tmp_path):
    with pytest.raises(InputError, match="data 'nowhere': expected 'digits', 'shapes' or a directory of images"):
        parity(cls_bundle, data="nowhere", sizes="48")
    with pytest.raises(InputError, match=r"reference ONNX model .*missing\.onnx: no such file"):
        parity(cls_bundle, reference=str(tmp_path / "missing.onnx"), sizes="48")
    with pytest.raises(InputError, match=r"unknown parity threshold\(s\) \['min_cosin'\]"):
        parity(cls_bundle, sizes="48", min_cosin=0.9)
    with pytest.raises(InputError, match="--checkpoint needs a PyTorch reference"):
        parity(cls_bundle, sizes="48", checkpoint="x.pt")
    with pytest.raises(InputError, match="data 'shapes' is for a segmentation model with one image input, got a classification"):
        parity(cls_bundle, data="shapes", sizes="48")
    with pytest.raises(InputError, match=r"data 'digits' has 10 classes, the model has 5 labels \(airplane, bird, cat, dog, frog\)"):
        parity(cls_bundle, data="digits", sizes="48")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="expected image files .* found none"):
        parity(cls_bundle, data=str(tmp_path / "empty"), sizes="48")


def test_two_input_model_sizes_per_input(tmp_path):
    b = make_bundle(tmp_path / "two", "two", profiles=["p=template:32-64@48,search:64-128@96",
                                                      "q=template:64-96@80,search:128-192@160"])
    report = parity(b, samples=2, min_cosine=0.9999)
    assert report.sizes[:3] == ["template:16x16+search:48x48", "template:32x32+search:64x64",
                                "template:32x64+search:64x128"]
    both = [r.profile for r in report.rows if r.size == "template:64x64+search:128x128" and r.target == "bundle"]
    assert both == ["p", "q"]  # both overlapping profiles contain it: both are checked
    report = parity(b, samples=2, sizes="template:80+search:160x192")
    assert [(r.profile, r.action) for r in report.rows if r.target == "bundle"] == [("q", "exact")]


def test_onnx_reference_replaces_the_source_model(cls_bundle, tmp_path):
    from tests.bundles import make_model

    same = parity(cls_bundle, reference=str(cls_bundle / "model.onnx"), sizes="48", samples=2, min_cosine=0.9999)
    assert same.references["onnx"] == str(cls_bundle / "model.onnx") and same.passed
    other = make_model(tmp_path / "other.onnx", "cls", seed=1)  # same graph, other weights
    with pytest.raises(ParityFailure, match=r"48x48 bundle small \(fp32, exact\) vs onnx: cosine"):
        parity(cls_bundle, reference=str(other), sizes="48", samples=4, min_cosine=0.9999)
