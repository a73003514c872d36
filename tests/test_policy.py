import pytest

from mrdeploy.exporter.build import default_policy
from mrdeploy.runtime.manifest import Manifest


@pytest.mark.parametrize("task, policy", [("classification", "resize"), ("segmentation", "pad"), ("dense", "pad")])
def test_default_policy_follows_the_task(task, policy):
    assert default_policy(task) == policy


def test_built_bundles_record_the_task_default_and_an_explicit_policy_wins(exported, tmp_path):
    from mrdeploy.exporter.build import build_engine

    seg = build_engine(exported("seg"), tmp_path / "seg", ["64"], quiet=True)
    assert Manifest.read(seg).policy == "pad"
    seg_err = build_engine(exported("seg"), tmp_path / "seg_err", ["64"], policy="error", quiet=True)
    assert Manifest.read(seg_err).policy == "error"
