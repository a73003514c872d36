import pytest

from mrdeploy.errors import ProfileError
from mrdeploy.runtime.profiles import (
    check_profile,
    make_profile,
    padded_shape,
    parse_batch,
    parse_profile,
    select,
    smallest_containing_padded,
)


def mk(text, channels=None, batch=(1, 1, 1), divisor=16, index=0):
    return make_profile(parse_profile(text), channels or {"input": 3}, batch, divisor, index)


def test_forms():
    assert mk("224").inputs["input"].min == (1, 3, 224, 224) == mk("224").inputs["input"].max
    p = mk("256x192")
    assert p.inputs["input"].opt == (1, 3, 256, 192) and p.is_static
    p = mk("small=96-160@128")
    assert p.name == "small"
    r = p.inputs["input"]
    assert (r.min, r.opt, r.max) == ((1, 3, 96, 96), (1, 3, 128, 128), (1, 3, 160, 160))
    r = mk("192x256-384x512@288x384").inputs["input"]
    assert (r.min[2:], r.opt[2:], r.max[2:]) == ((192, 256), (288, 384), (384, 512))
    # no opt: midpoint snapped down to the divisor
    assert mk("96-200").inputs["input"].opt[2:] == (144, 144)
    assert mk("96-160", batch=parse_batch("1-8@2")).inputs["input"].max[0] == 8


def test_multi_input():
    p = mk("t=template:112-128@128,search:224-384@256", channels={"template": 3, "search": 3})
    assert p.inputs["template"].max == (1, 3, 128, 128)
    assert p.inputs["search"].opt == (1, 3, 256, 256)
    with pytest.raises(ProfileError, match="gives one size but the model has 2 image inputs"):
        mk("224", channels={"template": 3, "search": 3})
    with pytest.raises(ProfileError, match="missing: \\['search'\\]"):
        mk("template:128", channels={"template": 3, "search": 3})


@pytest.mark.parametrize(
    "text, message",
    [
        ("96-", "does not parse"),
        ("abc", "does not parse"),
        ("bad name=224", "not a plain name"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(ProfileError, match=message):
        parse_profile(text)


def test_batch():
    assert parse_batch("1-8@1") == (1, 1, 8)
    assert parse_batch("4") == (4, 4, 4)
    with pytest.raises(ProfileError, match="expected 1 <= min <= opt <= max, got 4, 2, 8"):
        parse_batch("4-8@2")


def test_check():
    with pytest.raises(ProfileError, match="expected min <= opt <= max"):
        check_profile(mk("96-160@192"), divisor=16)
    with pytest.raises(ProfileError, match="not a multiple of the model's divisor 16 \\(nearest: 96x96\\)"):
        check_profile(mk("100-160@128"), divisor=16)
    with pytest.raises(ProfileError, match="above the model's valid maximum 256x256"):
        check_profile(mk("96-320@128"), divisor=16, max_size=(256, 256))
    with pytest.raises(ProfileError, match="below the model's valid minimum 64x64"):
        check_profile(mk("32-64@48"), divisor=16, min_size=(64, 64))
    check_profile(mk("96-160@128"), divisor=16, min_size=(32, 32), max_size=(512, 512))


def test_select_triton_rule():
    profiles = [mk("a=64-128@96"), mk("b=96-224@192"), mk("c=224-384@288")]
    shapes = lambda h, w: {"input": (1, 3, h, w)}  # noqa: E731
    assert select(profiles, shapes(112, 112)).name == "a"  # in a and b, nearer a's opt
    assert select(profiles, shapes(160, 160)).name == "b"
    assert select(profiles, shapes(224, 224)).name == "b"  # in b and c; b's opt 192 is nearer than 288
    assert select(profiles, shapes(400, 400)) is None
    # pad: smallest profile whose max holds the input
    assert smallest_containing_padded(profiles, shapes(50, 70)).name == "a"
    assert smallest_containing_padded(profiles, shapes(300, 390)) is None
    assert padded_shape(profiles[0], "input", (1, 3, 50, 70), divisor=16) == (1, 3, 64, 80)
