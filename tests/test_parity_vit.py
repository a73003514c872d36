"""Parity on a real bundle: the example ViT exported and built into 3 profiles, checked against PyTorch
and its ONNX model on labeled digits; a bundle with one profile's weights scaled by 1.5 fails."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from examples.zoo import EXAMPLES, checkpoint_path
from mrdeploy.exporter.build import build_engine
from mrdeploy.parity import ParityFailure, parity
from mrdeploy.runtime.manifest import Manifest, sha256_file
from mrdeploy.testing import assert_parity

PROFILES = ["small=32-64@48", "mid=72-120@96", "large=128-160@128"]


@pytest.fixture(scope="module")
def vit_bundle(exported, tmp_path_factory):
    out = tmp_path_factory.mktemp("vit") / "bundle"
    build_engine(exported("vit"), out, profiles=PROFILES, quiet=True)
    return out


def scale_largest_weight(bundle, profile: str, factor: float = 1.5) -> str:
    """Scale the largest float initializer (a weight matrix) of one profile and re-record its sha256."""
    m = Manifest.read(bundle)
    e = m.entry(profile)
    model = onnx.load(str(bundle / e.artifact))
    init = max((i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) >= 2),
               key=lambda i: int(np.prod(i.dims)))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    e.artifact = f"profiles/{e.name}.damaged.onnx"  # its own file: identical artifacts are stored once
    onnx.save(model, str(bundle / e.artifact))
    e.sha256 = sha256_file(bundle / e.artifact)
    m.write(bundle)
    return init.name


def test_vit_bundle_matches_pytorch_and_onnx_on_digits(vit_bundle, tmp_path):
    spec = EXAMPLES["vit"]
    report = assert_parity(
        vit_bundle, spec.factory_path, checkpoint=checkpoint_path("vit"), model_args=spec.model_args,
        data="digits", sizes="48,96,72x120,128", samples=24, min_cosine=0.99999, max_top1_drop=0.0,
        out=tmp_path,
    )
    rows = {(r.size, r.target): r for r in report.rows}
    assert [r.profile for r in report.rows if r.target == "bundle"] == ["small", "mid", "mid", "large"]
    for size in report.sizes:
        pt, ox, b = rows[(size, "pytorch")], rows[(size, "onnx")], rows[(size, "bundle")]
        assert ox.reference == "pytorch" and ox.max_abs < 1e-4 and ox.top1_agreement == 1.0
        assert b.reference == "onnx" and b.max_abs < 1e-4 and b.top1_agreement == 1.0
        assert pt.accuracy == ox.accuracy == b.accuracy  # same predictions on the same 24 held-out digits
        assert 0.0 <= b.accuracy <= 1.0 and b.samples == 24
    if checkpoint_path("vit") is not None:  # the trained model: far above chance (0.1) at trained sizes
        assert rows[("48x48", "bundle")].accuracy > 0.3 and rows[("96x96", "bundle")].accuracy > 0.3
    assert (tmp_path / "parity.png").stat().st_size > 10_000


def test_damaged_vit_bundle_fails_parity(vit_bundle, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(vit_bundle, damaged)
    name = scale_largest_weight(damaged, "mid")
    assert name  # some weight matrix of the specialized model
    with pytest.raises(ParityFailure) as err:
        parity(damaged, sizes="48,96,128", samples=8, min_cosine=0.9999)
    failing = [r for r in err.value.report.rows if r.failures]
    assert [(r.size, r.profile) for r in failing] == [("96x96", "mid")]
    lines = str(err.value).splitlines()
    assert lines[0] == "parity failed: 1 check(s) at 1 size(s) (96x96); thresholds min_cosine=0.9999"
    assert lines[1] == f"  96x96 bundle mid (fp32, exact) vs onnx: cosine {failing[0].cosine:.6g} < min 0.9999"
