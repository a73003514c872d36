"""Turn what the user gave (``--profile`` strings, specs, Profiles, a profiles file, ``--batch``) into
checked Profiles for one model."""

from __future__ import annotations

import os
from collections.abc import Sequence

from mrdeploy.errors import ProfileError
from mrdeploy.exporter.onnx_model import SourceModel, check_against_model, divisors, size_limits
from mrdeploy.runtime.profiles import Profile, ProfileSpec, complete_profiles, load_profiles_file, parse_batch


def _default_batch(source: SourceModel) -> tuple[int, int, int]:
    """Batch 1, or the model's fixed batch when its first input fixes one."""
    first = next(iter(source.dims))
    b = source.fixed(first)[0]
    return (b, b, b) if b else (1, 1, 1)


def resolve_profiles(
    source: SourceModel,
    profiles: Sequence[str | ProfileSpec | Profile] = (),
    *,
    batch: str | tuple[int, int, int] | None = None,
    profiles_file: str | os.PathLike | None = None,
) -> list[Profile]:
    """Parse, complete (batch, channels, opt) and check every profile against the model.

    Raises ProfileError naming the profile and what is wrong: a spec that does not parse, min > opt or
    opt > max, a size off the divisor, outside the valid range, against a dim the model fixes, or a
    duplicate name. Overlapping profiles are allowed.
    """
    items: list[str | ProfileSpec | Profile] = list(profiles)
    if profiles_file is not None:
        specs, file_batch = load_profiles_file(str(profiles_file))
        items.extend(specs)
        if batch is None and file_batch is not None:
            batch = file_batch
    if not items:
        raise ProfileError("no profiles given: expected at least one --profile (e.g. 224 or 96-160@128) or --profiles FILE")
    if isinstance(batch, tuple):
        b = batch
    elif batch is None:
        b = _default_batch(source)
    else:
        b = parse_batch(batch)
    lo, hi = size_limits(source.info)
    out = complete_profiles(items, source.channels, b, divisors(source.info), lo, hi)
    for profile in out:
        check_against_model(source, profile)
    return out
