"""``--max-drop`` holds fp16/bf16 engines to the budget on held-out data, as INT8 ones are
(calibration/heldout.py): the score is recorded, a drop over the budget is refused, missing data is
named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mrdeploy.cli import main
from mrdeploy.errors import BudgetError, CalibrationError
from mrdeploy.runtime.manifest import Manifest


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    from examples.data import write_image_folder

    root = tmp_path_factory.mktemp("heldout_digits")
    write_image_folder(root, n=20, sizes=[(48, 48), (64, 64)], kind="digits", seed=5)
    return root


def test_an_fp16_engine_is_scored_on_heldout_data_and_inspect_shows_it(exported, digits, tmp_path, capsys):
    out = tmp_path / "b"
    main(["build-engine", str(exported("cnn")), "-o", str(out), "--profile", "s=48", "--profile", "r=64-80@64",
          "--precision", "fp16", "--calib-data", str(digits), "--calib-samples", "8", "--max-drop", "0.05",
          "--threads", "1", "-q"])
    held = {e.name: e.measurements["heldout"] for e in Manifest.read(out).profiles}
    # the 12 images after the 8 calibration ones, at each of the profile's distinct sizes (min/opt/max),
    # as is and mirrored
    assert [held["s"]["heldout"], held["r"]["heldout"]] == [12, 12]
    assert held["s"]["heldout_rows"][1] == 24 and held["r"]["heldout_rows"][1] == 48
    for h in held.values():
        assert h["metric"] == "top1" and h["max_drop"] == 0.05
        assert 0 <= h["drop"] <= 0.05 and 0 <= h["cosine_drop"] < 1e-3  # fp16 rounding, not a wrong model
    capsys.readouterr()
    main(["inspect", str(out)])
    text = capsys.readouterr().out
    assert f"fp16 engine on {held['r']['heldout_rows'][0]} held-out pairs: drop {held['r']['drop']:.4f} " \
           "(top1, --max-drop 0.05)" in text
    for h in held.values():  # the point estimate, shown where the drop held to the budget is its upper bound
        shown = "" if h["estimated_drop"] == h["drop"] else f" (estimate {h['estimated_drop']:.4f})"
        assert f"--max-drop 0.05){shown}, cosine drop {h['cosine_drop']:.6f}" in text


def test_an_engine_over_the_budget_is_refused_naming_the_profile(exported, digits):
    from mrdeploy.calibration.heldout import check_engine, heldout_items
    from mrdeploy.exporter.onnx_model import read_model
    from mrdeploy.runtime.profiles import make_profile, parse_profile

    source = read_model(exported("cnn"))
    profile = make_profile(parse_profile("s=48"), {"input": 3})
    items = heldout_items(digits, None, 8, 0, 3)

    class Noise:  # an engine whose logits have nothing to do with the input
        class entry:
            precision = "bf16"

        def __init__(self):
            self.rng = np.random.default_rng(0)

        def run(self, feeds):
            n = len(next(iter(feeds.values())))
            return {source.info.outputs[0].name: self.rng.standard_normal((n, 10)).astype(np.float32)}

    with pytest.raises(BudgetError) as info:
        check_engine(Noise(), source.path, source.info, profile, items, 0.05, threads=1)
    assert str(info.value).startswith("profile s: --max-drop 0.05 (top1) is not met by the bf16 engine: "
                                      "the held-out drop is ")
    assert str(info.value).endswith("raise --max-drop or build this profile in fp32")


def test_max_drop_without_data_is_refused_before_any_work(exported, tmp_path):
    from mrdeploy.exporter.build import build_bundle

    with pytest.raises(CalibrationError) as info:
        build_bundle(exported("cnn"), tmp_path / "b", ["s=48"], precision="fp16", max_drop=0.05, quiet=True)
    assert str(info.value) == ("--max-drop needs held-out data to score the engine on: give --heldout-data DIR "
                               "or --calib-data DIR|FILE.npz|module:callable")
    assert not (tmp_path / "b").exists()


def test_a_bf16_ir_held_to_the_budget_is_checked_for_its_conversion_only(exported, digits, tmp_path):
    from mrdeploy.runtime.backends.registry import get_backend

    ov = get_backend("openvino")
    if not ov.is_available() or "bf16" not in ov.auto_precisions():
        pytest.skip("needs OpenVINO and a CPU with bf16 instructions")
    from mrdeploy.exporter.build import build_bundle
    from mrdeploy.runtime.backends.openvino import BF16_TOLERANCES, HELD_BF16_TOLERANCES

    build_bundle(exported("cnn"), tmp_path / "held", ["s=48"], backend="openvino", precision="bf16",
                 calib_data=digits, calib_samples=8, max_drop=0.05, threads=1, quiet=True)
    build_bundle(exported("cnn"), tmp_path / "plain", ["s=48"], backend="openvino", precision="bf16",
                 threads=1, quiet=True)
    held, plain = (Manifest.read(tmp_path / k).profiles[0] for k in ("held", "plain"))
    assert (held.options["check"]["atol"], held.options["check"]["rtol"]) == HELD_BF16_TOLERANCES[:2] == (0.5, 1.0)
    assert (plain.options["check"]["atol"], plain.options["check"]["rtol"]) == BF16_TOLERANCES[:2] == (0.1, 0.1)
    assert held.measurements["heldout"]["max_drop"] == 0.05 and "heldout" not in (plain.measurements or {})


def test_heldout_feeds_are_each_size_as_is_and_mirrored():
    from mrdeploy.calibration.preprocess import heldout_feeds
    from mrdeploy.runtime.modelinfo import InputInfo
    from mrdeploy.runtime.profiles import make_profile, parse_profile

    info = InputInfo.from_dict({"name": "x", "channels": 3})
    profile = make_profile(parse_profile("r=64-80@64"), {"x": 3})
    items = [np.random.default_rng(k).integers(0, 256, (50, 70, 3), dtype=np.uint8) for k in range(2)]
    feeds = heldout_feeds(items, [info], profile)
    assert [f["x"].shape[1:] for f in feeds] == [(64, 64)] * 2 + [(80, 80)] * 2 + [(64, 64)] * 2 + [(80, 80)] * 2
    for plain, mirrored in zip(feeds[0::2], feeds[1::2]):
        np.testing.assert_array_equal(mirrored["x"], plain["x"][:, :, ::-1])
        assert not np.array_equal(mirrored["x"], plain["x"])


class _Logits:
    """A session whose input ``i`` (one float per sample) returns row ``i`` of a logits table."""

    def __init__(self, table):
        self.table = table

    def run(self, names, feeds):
        return [self.table[feeds["i"][:, 0].astype(int)]]


def test_the_top1_drop_is_held_to_its_upper_bound_from_50_pairs_on():
    from mrdeploy.calibration.evaluate import OBSERVED_MIN_ROWS, Scorer, upper_bound

    assert upper_bound(0.0, 100) == pytest.approx(1 / 101)
    assert upper_bound(0.02, 100) == pytest.approx(0.03947, abs=1e-5)  # 2 flips in 100: over a 0.03 budget
    assert upper_bound(0.02, 1000) == pytest.approx(0.0249, abs=1e-4)  # the same rate on 1000 pairs: within it
    for n in (40, 100):
        ref = np.tile(np.array([[10.0, 0.0, 0.0]], np.float32), (n, 1))
        got = ref.copy()
        got[:2] = [[0.0, 10.0, 0.0]]  # two pairs flip, by errors no other pair's margin absorbs either
        feeds = [{"i": np.array([k], np.float32)} for k in range(n)]
        scorer = Scorer(feeds, "y", "top1", [ref])
        score = scorer.score(_Logits(got))
        assert score.observed == pytest.approx(2 / n) and score.estimate == pytest.approx(2 / n)
        if n >= OBSERVED_MIN_ROWS:
            assert score.drop == pytest.approx(upper_bound(2 / n, n)) and score.drop > 0.03
        else:  # too few pairs for a bound: the pooled estimate
            assert score.drop == score.estimate


def test_a_budget_refused_on_an_upper_bound_says_so(tmp_path):
    from mrdeploy.calibration.budget import fit_budget
    from mrdeploy.calibration.evaluate import Score

    def score(path):  # every model: 0.05 held to the budget, the upper bound of an estimated 0.02
        return Score(0.05, 0.02, 0.001, 0.02)

    groups = {"a": ["n1"], "b": ["n2"]}
    with pytest.raises(BudgetError) as info:
        fit_budget(groups, lambda exclude, path: path, score, Score(0.1, 0.1, 0.01, 0.1), 0.03, tmp_path, name="p",
                   metric="top1")
    assert "still 0.0500 with 1 of 2 blocks kept float (only b in INT8, the upper bound of an estimated " \
           "0.0200 that more held-out data narrows)" in str(info.value)


def test_the_top1_drop_is_the_worst_of_all_pairs_and_each_size_with_50_pairs():
    from mrdeploy.calibration.evaluate import Scorer, upper_bound

    class Table:  # input i (C, H, W) with sample index k at [0, 0, 0]: row k of a logits table
        def __init__(self, table):
            self.table = table

        def run(self, names, feeds):
            return [self.table[feeds["i"][:, 0, 0, 0].astype(int)]]

    for large in (100, 40):  # pairs at 16x16; 100 at 8x8, listed interleaved
        n = 100 + large
        sizes = [8, 16] * large + [8] * (100 - large)
        feeds = [{"i": np.full((1, s, s), k, np.float32)} for k, s in enumerate(sizes)]
        ref = np.tile(np.array([[10.0, 0.0, 0.0]], np.float32), (n, 1))
        got = ref.copy()
        got[[k for k, s in enumerate(sizes) if s == 16][:3]] = [0.0, 10.0, 0.0]  # 3 flips, all at 16x16
        by_size = [ref[[k for k, s in enumerate(sizes) if s == size]] for size in (8, 16)]
        score = Scorer(feeds, "y", "top1", by_size).score(Table(got))
        if large >= 50:  # 3 in 200 pairs meet 0.03 together (bound 0.026), 3 in 100 at 16x16 do not
            assert upper_bound(3 / n, n) < 0.03
            assert score.at == "16x16" and score.observed == pytest.approx(0.03)
            assert score.drop == pytest.approx(upper_bound(0.03, 100)) and score.drop > 0.03
            assert score.where == " at 16x16 (the worst size)"
        else:  # 40 pairs at 16x16 are too few to be held alone: all pairs together
            assert score.at is None and score.where == "" and score.drop == pytest.approx(upper_bound(3 / n, n))


def test_inspect_names_the_size_that_gave_the_drop_and_the_estimate_under_its_bound():
    from mrdeploy.inspection import _estimate

    assert _estimate({"drop": 0.0262, "estimated_drop": 0.0132, "drop_at": "224x224"}) == \
        " (at 224x224, the worst size; estimate 0.0132)"
    assert _estimate({"drop": 0.0262, "estimated_drop": 0.0132, "drop_at": None}) == " (estimate 0.0132)"
    assert _estimate({"drop": 0.05, "estimated_drop": 0.05}) == ""  # an old record has no drop_at
