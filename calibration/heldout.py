"""Hold a float engine of lowered precision (bf16, fp16) to ``--max-drop`` on held-out data.

INT8 profiles meet the budget in calibration (:mod:`.api`). An fp16 or bf16 engine is not calibrated,
but it rounds every activation: with ``--max-drop`` its outputs are scored against the source model's
on the held-out samples an INT8 build of the same data would use (the items after the calibration
ones, or ``--heldout-data``), at the profile's min/opt/max, with the same metric and rule
(:class:`~mrdeploy.calibration.evaluate.Scorer`), and the profile is refused when the drop exceeds the
budget. ``--backend auto`` then compares every candidate that is not fp32 on the same footing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrdeploy.calibration.evaluate import Scorer, metric_for
from mrdeploy.calibration.preprocess import heldout_feeds
from mrdeploy.calibration.sources import load_data, load_samples
from mrdeploy.errors import BudgetError, CalibrationError
from mrdeploy.runtime.modelinfo import ModelInfo
from mrdeploy.runtime.profiles import Profile


class EngineSession:
    """An engine (``run(feeds) -> {name: array}``) seen as an ONNX Runtime session (``run(names, feeds)``)."""

    def __init__(self, engine):
        self.engine = engine

    def run(self, names, feeds):
        outs = self.engine.run(feeds)
        return [np.asarray(outs[n], dtype=np.float32) for n in (names or list(outs))]


def heldout_items(data, heldout, samples: int, seed: int, channels: int) -> list:
    """The held-out items: all of ``heldout`` when given, else those ``data`` holds beyond its first
    ``samples`` (what INT8 calibration of the same data holds out)."""
    if data is None and heldout is None:
        raise CalibrationError("--max-drop needs held-out data to score the engine on: give --heldout-data DIR "
                               "or --calib-data DIR|FILE.npz|module:callable")
    if data is None:
        items = load_samples(heldout, 10_000, seed + 1, channels).items
    else:
        items = load_data(data, samples, seed, heldout, channels, need_heldout=True).heldout
    if not items:
        raise CalibrationError(f"--max-drop: no held-out samples in {heldout if data is None else data}")
    return items


def check_engine(engine, source_path: str | Path, info: ModelInfo, profile: Profile, items, max_drop: float,
                 threads: int | None = None) -> dict:
    """Score ``engine`` for ``profile`` on held-out ``items`` against the source model; -> the record
    for the manifest. Raises BudgetError (naming the profile) when the drop exceeds ``max_drop``."""
    inputs = [info.input(n) for n in profile.inputs]
    feeds = heldout_feeds(items, inputs, profile)
    first = next(iter(profile.inputs.values()))
    batch = (first.min[0], first.max[0])
    output = info.outputs[0].name
    metric = metric_for(info.task)
    scorer = Scorer.make(source_path, feeds, output, metric, threads, batch)
    score = scorer.score(EngineSession(engine))
    record = {"metric": metric, "drop": round(score.drop, 6), "observed_drop": round(score.observed, 6),
              "estimated_drop": round(score.estimate, 6), "drop_at": score.at,
              "cosine_drop": round(score.cosine, 6), "max_drop": max_drop, "heldout": len(items),
              "heldout_rows": list(scorer.rows)}
    if score.drop > max_drop:
        raise BudgetError(f"profile {profile.name}: --max-drop {max_drop} ({metric}) is not met by the "
                          f"{engine.entry.precision} engine: the held-out drop is {score.drop:.4f}{score.where} "
                          f"on {scorer.rows[0]} (sample, size) pairs; raise --max-drop or build this profile in fp32")
    return record
