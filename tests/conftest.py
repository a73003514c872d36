"""Shared fixtures. Exported example models are made once per test session and shared."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so tests can import examples.* and tests.*


@pytest.fixture(scope="session", autouse=True)
def builds_without_source_timing():
    """Builds in tests keep every specialized artifact (``build_bundle(time_source=False)`` by default):
    artifacts that depend on a timing would make the tests that read them flaky. The tests of that rule
    (tests/test_source_rule.py) turn it on."""
    from mrdeploy.exporter import build

    build.TIME_SOURCE = False
    yield
    build.TIME_SOURCE = True


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``exported("vit" | "cnn" | "seg")`` -> Path of that example exported to ONNX (dynamic batch/H/W,
    mrdeploy metadata, committed checkpoint loaded when there is one). Exported once per session."""
    from examples.zoo import export_example

    cache: dict[str, Path] = {}
    out_dir = tmp_path_factory.mktemp("exported")

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = export_example(name, out_dir / f"{name}.onnx", validate=False)
        return cache[name]

    return get
