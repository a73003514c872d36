"""INT8 and the build's checks on real pretrained weights (EfficientNet-Lite1, PP-OCRv4) and real photos.

The models install with the project (examples/real); one Lite1 export is shared by the module.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from mrdeploy.errors import CalibrationError, ExportError
from mrdeploy.exporter.build import build_bundle
from mrdeploy.runtime.manifest import Manifest

pytest.importorskip("efficientnet_lite_pytorch")


@pytest.fixture(scope="module")
def lite1(tmp_path_factory):
    import mrdeploy
    from examples.real.models import LITE_MEAN, LITE_STD

    out = tmp_path_factory.mktemp("lite1") / "lite1.onnx"
    mrdeploy.export("examples/real/models.py:efficientnet_lite1", (1, 3, 224, 224), out, divisor=32, min_size=96,
                    max_size=512, mean=LITE_MEAN, std=LITE_STD, validate=False, name="lite1")
    return out


@pytest.fixture(scope="module")
def photo_dirs(tmp_path_factory):
    from examples.real import photos

    root = tmp_path_factory.mktemp("photos")
    return photos.write_folder(root / "calib", "calib", 12), photos.write_folder(root / "held", "eval", 6)


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def test_no_quantizer_between_a_conv_and_its_relu6(lite1, photo_dirs, tmp_path):
    from mrdeploy.calibration.api import calibrate_profile
    from mrdeploy.calibration.qdq import qdq_summary
    from mrdeploy.runtime.profiles import make_profile, parse_profile

    src = onnx.load(str(lite1))
    clips = sum(n.op_type == "Clip" for n in src.graph.node)
    assert clips == 43  # ReLU6 after every expand and depthwise conv and the head
    r = calibrate_profile(lite1, make_profile(parse_profile("128"), {"input": 3}, divisor=32), photo_dirs[0],
                          qdq_path=tmp_path / "q.onnx", samples=12, heldout=0)
    q = onnx.load(str(tmp_path / "q.onnx"))
    producer = _producers(q)
    # the ReLU6 folds into the conv's output quantizer (range 0..6), as plain ORT does: no Clip is left
    # reading a dequantized conv output, and no conv output is quantized on its way into a Clip
    assert sum(n.op_type == "Clip" for n in q.graph.node) == 0
    for n in q.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in producer:
            assert producer[n.input[0]].op_type != "Clip"
    summary = qdq_summary(tmp_path / "q.onnx")
    assert summary["quantize"] <= 81  # plain quantize_static on this model writes 81 (one on the logits)
    assert summary["activation_dtypes"] == ["uint8"]
    assert r.weight_bits in (7, 8)


def test_bias_correction_brings_int8_back_toward_fp32(lite1, photo_dirs, tmp_path):
    from examples.real import photos
    from mrdeploy.calibration.api import calibrate_profile
    from mrdeploy.calibration.bias import _layers
    from mrdeploy.runtime.profiles import make_profile, parse_profile

    held = photo_dirs[1]
    calib = photos.write_folder(tmp_path / "calib16", "calib", 16)  # MIN_SAMPLES: fewer are left alone
    profile = make_profile(parse_profile("128"), {"input": 3}, divisor=32)
    runs = {}
    for on in (True, False):
        runs[on] = calibrate_profile(lite1, profile, calib, qdq_path=tmp_path / f"q{on}.onnx", samples=16,
                                     heldout=held, bias_correction=on)
    q_on, q_off = (onnx.load(str(tmp_path / f"q{on}.onnx")) for on in (True, False))
    layers = _layers(q_off, onnx.load(str(lite1)))
    assert len(layers) == runs[True].bias_corrected == 65 and runs[False].bias_corrected == 0  # every conv
    assert runs[True].to_dict()["bias_corrected"] == 65
    # only the int32 biases changed, and most of them
    on_inits = {t.name: t for t in q_on.graph.initializer}
    changed = 0
    for t in q_off.graph.initializer:
        same = t.SerializeToString() == on_inits[t.name].SerializeToString()
        assert same or t.name in {la.bias for la in layers}
        changed += not same
    assert changed >= 50
    # the logits' cosine distance to FP32 on held-out photos falls (measured 0.07 -> 0.01 with the 7-bit
    # weights of a CPU without VNNI, 0.0076 -> 0.0039 with 8-bit ones on a VNNI CPU)
    assert runs[True].cosine_drop < 0.6 * runs[False].cosine_drop
    # with fewer samples than MIN_SAMPLES the biases are left alone, and a note says so
    few = calibrate_profile(lite1, profile, photo_dirs[0], qdq_path=tmp_path / "few.onnx", samples=12, heldout=0)
    assert few.bias_corrected == 0
    assert "bias correction left out: it needs 16 calibration samples, got 12" in few.notes


def test_segmented_bias_correction_equals_running_the_whole_model_per_layer(lite1, tmp_path):
    """calibration/bias.py runs one short segment of the graph per layer; the result must be what the
    definition gives: each layer corrected on the whole Q/DQ model with every earlier bias corrected."""
    from onnx import TensorProto, helper, numpy_helper

    from examples.real import photos
    from examples.real.models import LITE_MEAN, LITE_STD
    from mrdeploy._ort import cpu_session
    from mrdeploy.calibration.bias import _layers, correct_biases
    from mrdeploy.calibration.qdq import write_qdq
    from mrdeploy.calibration.ranges import compute_ranges, to_jsonable

    feeds = [{"input": x} for s in ((96, 96), (96, 128)) for x in photos.batch("calib", 4, s, LITE_MEAN, LITE_STD)]
    fp32 = onnx.load(str(lite1))
    ranges = compute_ranges(lite1, feeds, "minmax", symmetric=False, desc="ranges")
    q = onnx.load(str(write_qdq(lite1, tmp_path / "q.onnx", to_jsonable(ranges), "minmax", "onnxruntime",
                                exclude=[], weight_bits=8)))
    layers = _layers(q, fp32)
    as_quantized = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}

    def channel_means(model, names, run=None):  # ``run``: the names to compute (all by default)
        m = onnx.ModelProto()
        m.CopyFrom(model)
        m.graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in names)
        fed = [t for t in m.graph.initializer if t.name in biases]
        for t in fed:
            m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            m.graph.initializer.remove(t)
        s = cpu_session(m)
        for shape in ((96, 96), (96, 128)):
            batch = np.stack([f["input"] for f in feeds if f["input"].shape[1:] == shape])
            yield [o.astype(np.float64).mean(axis=tuple(a for a in range(o.ndim) if a != 1)) * len(batch)
                   for o in s.run(run or names, {"input": batch, **{t.name: biases[t.name] for t in fed}})]

    biases = {la.bias: as_quantized[la.bias].copy() for la in layers}
    want = [sum(v) / len(feeds) for v in zip(*channel_means(fp32, [la.fp32_output for la in layers]))]
    for k, la in enumerate(layers[:8]):  # the reference costs a whole-model run per layer: the first 8
        got = sum(v[0] for v in channel_means(q, [la.output for la in layers], [la.output])) / len(feeds)
        biases[la.bias] = (biases[la.bias] + np.round((want[k] - got) / la.scale)).astype(np.int32)

    assert correct_biases(q, fp32, feeds, desc="segmented") == 65
    corrected = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    for la in layers[:8]:  # (with only the asked layer's output added to the graph, ORT fuses other kernels
        # and the reference itself moves some values by 1-4 steps)
        np.testing.assert_array_equal(corrected[la.bias], biases[la.bias], err_msg=la.bias)
    assert sum(not np.array_equal(corrected[la.bias], as_quantized[la.bias]) for la in layers) >= 50


def test_dead_channels_keep_only_their_bias(lite1, tmp_path):
    from onnx import numpy_helper

    from mrdeploy.calibration.qdq import BIAS_LIMIT, zero_overflowing_channels

    model = onnx.load(str(lite1))
    stem = next(n for n in model.graph.node if n.op_type == "Conv")
    inits = {i.name: i for i in model.graph.initializer}
    w = numpy_helper.to_array(inits[stem.input[1]])
    amax = np.abs(w.reshape(w.shape[0], -1)).max(1)
    dead = amax < 1e-3 * amax.max()
    assert dead.sum() >= 5  # BatchNorm folding left channels with ~0 weights and a bias
    ranges = {stem.input[0]: [-1.0, 1.0]}
    assert zero_overflowing_channels(model, ranges, "onnxruntime", 8) >= dead.sum()
    w2 = numpy_helper.to_array({i.name: i for i in model.graph.initializer}[stem.input[1]])
    assert np.all(w2[dead] == 0) and np.array_equal(w2[~dead], w[~dead])
    b = numpy_helper.to_array(inits[stem.input[2]])
    w_scale = np.abs(w2.reshape(w.shape[0], -1)).max(1) / 127
    live = w_scale > 0
    assert np.all(np.abs(b[live]) / (2 / 255 * w_scale[live]) <= BIAS_LIMIT)


def test_budget_with_few_photos_and_separate_heldout(lite1, photo_dirs, tmp_path):
    calib, held = photo_dirs
    res = build_bundle(lite1, tmp_path / "b", ["128"], precision="int8", calib_data=calib,
                                               heldout_data=held, max_drop=0.5, quiet=True)
    c = Manifest.read(res.path).profiles[0].calibration
    assert (c["samples"], c["heldout"]) == (12, 6)
    assert c["drop"] <= 0.5 and 0 <= c["observed_drop"] <= 1 and c["notes"][0].startswith(f"{calib} (12 images) has 12")
    assert c["max_drop"] == 0.5
    entry = Manifest.read(res.path).profiles[0]
    assert entry.options["session"]["session_config"] == {"optimization.disable_specified_optimizers": "WeightBiasQuantization"}
    # no separate held-out data: a third of the 12 photos is held out for the budget
    res2 = build_bundle(lite1, tmp_path / "b2", ["128"], precision="int8", calib_data=calib,
                                                max_drop=0.5, quiet=True)
    c2 = Manifest.read(res2.path).profiles[0].calibration
    assert (c2["samples"], c2["heldout"]) == (8, 4) and "holding out 4 for the accuracy budget" in c2["notes"][0]


@pytest.mark.parametrize("case, message", [
    ("empty", r"held-out data .*empty.*: expected|held-out data .* has no usable images|holds no images"),
    ("max_drop", r"--max-drop must be in \[0, 1\) \(a fraction: 0.01 = 1 point\), got 1.5"),
    ("one_image", r"calibration data .*one \(1 images\): expected at least 2 usable images, got 1"),
])
def test_bad_budget_input_is_refused_and_writes_nothing(lite1, photo_dirs, tmp_path, case, message):
    import shutil

    calib, held = photo_dirs
    kw = dict(precision="int8", calib_data=calib, max_drop=0.03, quiet=True)
    if case == "empty":
        (tmp_path / "empty").mkdir()
        kw["heldout_data"] = tmp_path / "empty"
    elif case == "max_drop":
        kw["max_drop"] = 1.5
    else:
        (tmp_path / "one").mkdir()
        shutil.copy(next(calib.iterdir()), tmp_path / "one")
        kw["calib_data"] = tmp_path / "one"
    with pytest.raises(CalibrationError, match=message):
        build_bundle(lite1, tmp_path / "out", ["128"], **kw)
    assert not (tmp_path / "out").exists()


def test_a_wrong_specialization_is_refused_at_int8_too(lite1, photo_dirs, tmp_path, monkeypatch):
    """An int8 profile is quantized from the fp32 specialized model: that model is checked first, so a
    specialization that breaks the model never ships as INT8 (it once did, with 0% agreement)."""
    from onnx import numpy_helper

    import mrdeploy.exporter.specialize as spec_mod

    real = spec_mod.specialize

    def broken(model, profile):
        s = real(model, profile)
        init = next(i for i in s.model.graph.initializer if i.name.endswith("_fc.weight"))
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
        return s

    monkeypatch.setattr(spec_mod, "specialize", broken)

    with pytest.raises(ExportError, match=r"profile 'p0_128x128': the fp32 specialized model does not match the "
                                          r"source ONNX model; no bundle written"):
        build_bundle(lite1, tmp_path / "b", ["128"], precision="int8", calib_data=photo_dirs[0], quiet=True)
    assert not (tmp_path / "b").exists()


def test_allclose_check_passes_float_precision_and_fails_real_errors():
    from mrdeploy.exporter.specialize import close_enough

    tiny = np.full((1, 1, 64, 64), 1e-7, np.float32)  # a probability map near zero on random input
    ok, _ = close_enough(tiny, tiny + np.float32(1.5e-7) * np.sign(np.random.default_rng(0).standard_normal(tiny.shape)),
                         1e-4, 1e-3, 0.9999)
    assert ok  # max abs 1.5e-7 is float precision, whatever the cosine of two near-zero maps says
    ref = np.linspace(-3, 3, 1000, dtype=np.float32)
    assert close_enough(ref, ref * (1 + 5e-4), 1e-4, 1e-3, 0.9999)[0]  # within rtol everywhere
    ok, why = close_enough(ref, ref + 0.01, 1e-4, 1e-3, 0.9999)
    assert not ok and "values outside atol 0.0001 and rtol 0.001" in why


def test_ppocr_detector_bundle_matches_its_source(tmp_path):
    """PP-OCRv4's text detector (opset 12, from the rapidocr wheel) was refused at min with max abs error
    1.5e-07 because its cosine was 0.99989: allclose semantics build it, and it matches within 1e-4 rel."""
    import mrdeploy
    from examples.real.models import ppocr_det
    from mrdeploy.exporter.specialize import cpu_session

    try:
        det = ppocr_det()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    res = build_bundle(det, tmp_path / "det", ["160-224@192"], divisor=32,
                                               spatial_outputs=["sigmoid_0.tmp_0"], quiet=True)
    assert all(r.max_abs is not None for r in res.profiles)
    runner = mrdeploy.load(res.path)
    src = cpu_session(det, 2)
    from examples.real import photos

    for h, w in ((160, 224), (192, 192), (224, 160)):
        x = photos.batch("eval", 1, (h, w), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        ref = src.run(None, {src.get_inputs()[0].name: x})[0]
        got = runner(x)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    runner.close()
