"""Profile planning: optimality against brute force, sizes from folders/files, the file build-engine reads."""

from __future__ import annotations

import random

import pytest
import yaml
from PIL import Image

from mrdeploy.cli import main
from mrdeploy.errors import InputError, ProfileError
from mrdeploy.planning import brute_force_cost, plan_profiles, sizes_from
from mrdeploy.runtime.manifest import Manifest
from mrdeploy.runtime.profiles import (
    load_profiles_file,
    make_profile,
    parse_profile,
    smallest_containing_padded,
)


def _random_sizes(seed, n=60, hs=(96, 128, 200, 256, 320), ws=(96, 160, 256, 320)):
    rng = random.Random(seed)
    return [(rng.choice(hs) + rng.randint(-8, 0), rng.choice(ws) + rng.randint(-8, 0)) for _ in range(n)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 2, 3])
def test_plan_is_optimal_against_brute_force(seed, k):
    sizes = _random_sizes(seed)
    plan = plan_profiles(sizes, k, divisor=32)
    chosen = plan.chosen
    assert chosen.exact and chosen.k == k
    assert chosen.method == ("exact" if k == 1 else "exhaustive")  # 2-D sizes: not a chain
    assert chosen.cost == pytest.approx(brute_force_cost(sizes, k, divisor=32))


def test_square_sizes_use_the_exact_dp_and_match_brute_force():
    rng = random.Random(7)
    sizes = [(s, s) for s in (rng.choice([64, 96, 128, 160, 224, 256, 288, 320, 384]) for _ in range(200))]
    plan = plan_profiles(sizes, 3, divisor=32)
    assert [c.method for c in plan.choices] == ["exact", "exact DP", "exact DP"]
    for c in plan.choices:
        assert c.cost == pytest.approx(brute_force_cost(sizes, c.k, divisor=32))


def test_heuristic_is_never_below_the_optimum_and_improves_with_k():
    sizes = _random_sizes(3, n=120, hs=(96, 128, 160, 200, 256, 320), ws=(96, 128, 160, 256, 320))
    heuristic = plan_profiles(sizes, 3, divisor=32, exhaustive_limit=0)
    exact = plan_profiles(sizes, 3, divisor=32)
    assert [c.method for c in heuristic.choices] == ["exact", "heuristic", "heuristic"]
    costs = [c.cost for c in heuristic.choices]
    assert costs == sorted(costs, reverse=True)
    for h, e in zip(heuristic.choices, exact.choices):
        assert h.cost >= e.cost - 1e-6 and h.cost <= e.cost * 1.05


def test_padded_fraction_numbers():
    sizes = [(224, 224)] * 10 + [(480, 640)] * 5 + [(300, 300)]
    plan = plan_profiles(sizes, 3, divisor=16)
    real = 10 * 224 * 224 + 5 * 480 * 640 + 300 * 300
    # K=1: everything padded to 480x640
    assert plan.choices[0].padded_fraction == pytest.approx(1 - real / (16 * 480 * 640))
    # K=2: 224 alone, 300 (-> 304) padded into 480x640
    assert [b.size for b in plan.choices[1].buckets] == [(224, 224), (480, 640)]
    assert plan.choices[1].padded_fraction == pytest.approx(1 - real / (10 * 224 * 224 + 6 * 480 * 640))
    # K=3: every size its own profile; only the divisor rounding of 300 -> 304 is padding
    assert plan.choices[2].padded_fraction == pytest.approx(1 - real / (10 * 224 * 224 + 5 * 480 * 640 + 304 * 304))
    assert plan.profile_strings() == ["p0_224x224=224", "p1_304x304=304", "p2_480x640=480x640"]
    # planning stops when every distinct size has a profile
    assert len(plan_profiles(sizes, 6, divisor=16).choices) == 3


def test_the_plan_agrees_with_the_runtime_pad_rule():
    sizes = _random_sizes(11, n=80)
    plan = plan_profiles(sizes, 3, divisor=32)
    profiles = [
        make_profile(parse_profile(s), {"input": 3}, divisor=32, index=i) for i, s in enumerate(plan.profile_strings())
    ]
    served = 0
    for h, w in sizes:
        p = smallest_containing_padded(profiles, {"input": (1, 3, h, w)})
        served += p.area("max")
    assert served == pytest.approx(plan.chosen.cost)


def test_ranged_mode_and_size_limits():
    sizes = [(64, 64)] * 3 + [(96, 96)] * 5 + [(100, 128)] * 2 + [(2000, 2000)]
    plan = plan_profiles(sizes, 1, divisor=32, min_size=64, max_size=512, mode="ranged")
    assert plan.skipped == 1 and plan.total == 11
    assert plan.profile_strings() == ["p0_128x128=64-128@96"]
    with pytest.raises(ProfileError, match="all 1 sizes are above the model's maximum size 512x512"):
        plan_profiles([(2000, 2000)], 2, max_size=512)
    with pytest.raises(ProfileError, match="--max-profiles: expected at least 1, got 0"):
        plan_profiles(sizes, 0)


def test_sizes_from_a_folder_and_a_text_file(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for i, (w, h) in enumerate([(640, 480), (320, 240), (320, 240)]):
        Image.new("RGB", (w, h)).save(tmp_path / "imgs" / ("sub" if i else "") / f"{i}.png")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    assert sorted(sizes_from(tmp_path / "imgs")) == [(240, 320), (240, 320), (480, 640)]
    exif = Image.Exif()
    exif[0x0112] = 6  # a camera JPEG stored landscape, shown portrait
    Image.new("RGB", (200, 100)).save(tmp_path / "imgs" / "rot.jpg", exif=exif)
    assert sorted(sizes_from(tmp_path / "imgs")) == [(200, 100), (240, 320), (240, 320), (480, 640)]
    (tmp_path / "imgs" / "rot.jpg").unlink()
    listing = tmp_path / "sizes.txt"
    listing.write_text("# sizes\n480x640 3\n\n224x224\n")
    assert sizes_from(listing) == [(480, 640)] * 3 + [(224, 224)]
    listing.write_text("480x640\n224 by 224\n")
    with pytest.raises(InputError, match=r"sizes.txt:2: expected HxW or HxW COUNT \(e.g. 480x640 or 480x640 12\), got '224 by 224'"):
        sizes_from(listing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="expected image files"):
        sizes_from(tmp_path / "empty")


def test_cli_plan_writes_a_file_build_engine_accepts(tmp_path, capsys):
    from tests.test_build import _conv_model

    model = _conv_model(tmp_path / "m.onnx")
    listing = tmp_path / "sizes.txt"
    listing.write_text("60x60 20\n64x96 10\n120x100 4\n128x128 1\n")
    out = tmp_path / "profiles.yaml"
    main(["profiles", "plan", "--sizes-from", str(listing), "--max-profiles", "2", "--divisor", "32", "-o", str(out)])
    text = capsys.readouterr().out
    assert " 1    " in text and " 2    " in text and "chosen: K=2 (exact DP)" in text
    data = yaml.safe_load(out.read_text())
    assert data["profiles"] == ["p0_64x96=64x96", "p1_128x128=128"]
    specs, batch = load_profiles_file(str(out))
    assert len(specs) == 2 and batch is None
    main(["build-engine", str(model), "-o", str(tmp_path / "b"), "--profiles", str(out), "--divisor", "32", "-q"])
    m = Manifest.read(tmp_path / "b")
    assert [e.name for e in m.profiles] == ["p0_64x96", "p1_128x128"]
    assert m.profiles[0].profile.inputs["x"].max == (1, 3, 64, 96)


def test_cli_plan_for_a_model_with_two_inputs(tmp_path, capsys):
    from tests.test_build import _two_input_model

    model = _two_input_model(tmp_path / "two.onnx")
    listing = tmp_path / "sizes.txt"
    listing.write_text("64x64 5\n96x128 5\n")
    args = ["profiles", "plan", "--sizes-from", str(listing), "--max-profiles", "2", "--model", str(model)]
    for extra, message in [
        ([], "has 2 image inputs (template, search): name the planned one with --input"),
        (["--input", "search"], "--with: expected a spec for each other input ['template']"),
    ]:
        with pytest.raises(SystemExit):
            main([*args, *extra])
        assert message in capsys.readouterr().err
    out = tmp_path / "p.yaml"
    main([*args, "--input", "search", "--with", "template:32-64@48", "-o", str(out)])
    assert yaml.safe_load(out.read_text())["profiles"] == [
        "p0_64x64=search:64,template:32-64@48",
        "p1_96x128=search:96x128,template:32-64@48",
    ]
    main(["build-engine", str(model), "-o", str(tmp_path / "b"), "--profiles", str(out), "-q"])
    m = Manifest.read(tmp_path / "b")
    assert m.profiles[1].profile.inputs["search"].max == (1, 3, 96, 128)
    assert m.profiles[1].profile.inputs["template"].opt == (1, 3, 48, 48)
