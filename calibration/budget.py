"""The accuracy budget: keep the fewest node blocks in float so the held-out drop meets ``--max-drop``.

Feasibility first: each block is quantized alone (all else float); if even the least harmful one
breaks the budget, no INT8 model meets it. Then greedy, by measurement: round one re-quantizes the model with each block in turn kept float and scores
it on the held-out samples; the block whose float-keeping helps most is kept float; later rounds
re-score the ``BEAM`` most helpful remaining blocks of the previous round (with the blocks already
chosen kept float) and take the best again, until the budget is met. If every block would have to stay
float, there is no INT8 model within the budget: CalibrationError, nothing written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mrdeploy._progress import Progress
from mrdeploy.errors import CalibrationError

BEAM = 6


@dataclass
class Budget:
    path: Path
    drop: float
    float_nodes: list[dict] = field(default_factory=list)
    evaluations: int = 0


def fit_budget(
    groups: Mapping[str, Sequence[str]],
    build: Callable[[Sequence[str], Path], Path],
    score: Callable[[Path], tuple[float, float]],
    drop: float,
    max_drop: float,
    work: Path,
    desc: str = "budget",
    name: str = "profile",
    metric: str = "top1",
) -> Budget:
    """Keep blocks of ``groups`` (block -> node names) float until the drop <= ``max_drop``. ``score`` gives
    (drop, tie-breaker): candidates with equal drops are ranked by the tie-breaker (a cosine drop)."""
    chosen: list[dict] = []
    excluded: list[str] = []
    remaining = list(groups)
    ranking: list[str] = list(remaining)
    evaluations = 0
    best_path: Path | None = None
    with Progress(None, desc) as bar:
        # Feasibility first: the least harmful block quantized alone (everything else float) is the best
        # any INT8 model can do if quantizing more never helps; if even that breaks the budget, stop here.
        alone = {}
        for g in groups:
            path = work / f"alone_{len(alone)}.onnx"
            build([n for other in groups if other != g for n in groups[other]], path)
            alone[g] = score(path)[0]
            evaluations += 1
            bar.update(1, note=f"only {g}: {alone[g]:.4f}")
            if alone[g] <= max_drop:
                break
        least = min(alone, key=alone.get) if alone else None
        if least is None or alone[least] > max_drop:
            raise CalibrationError(
                f"profile {name}: --max-drop {max_drop} ({metric}) cannot be met by any INT8 model: the drop is "
                f"{drop:.4f} with every node in INT8, and still "
                + (f"{alone[least]:.4f} with only the least harmful block ({least}) in INT8 and all else float"
                   if least else "nothing is quantizable")
                + "; raise --max-drop, calibrate with more or other data, or build this profile in fp32"
            )
        while drop > max_drop:
            if len(remaining) <= 1:
                detail = (f"even with {len(chosen)} of {len(groups)} node blocks kept float the drop is {drop:.4f}"
                          if chosen else f"the drop with every node in INT8 is {drop:.4f}")
                raise CalibrationError(
                    f"profile {name}: --max-drop {max_drop} ({metric}) cannot be met by any INT8 model: {detail}, "
                    f"and keeping the last block ({', '.join(remaining) or 'none'}) float too leaves no INT8 node; "
                    "raise --max-drop, calibrate with more or other data, or build this profile in fp32"
                )
            to_try = remaining if not chosen else [g for g in ranking if g in remaining][:BEAM]
            scores, paths = {}, {}
            for g in to_try:
                path = work / f"budget_{evaluations}.onnx"
                build([*excluded, *groups[g]], path)
                scores[g], paths[g] = score(path), path
                evaluations += 1
                bar.update(1, note=f"{g}: {scores[g][0]:.4f}")
                if scores[g][0] <= max_drop:
                    break  # good enough: the first block that meets the budget ends the round
            best = min(scores, key=lambda g: (*scores[g], len(groups[g])))
            ranking = sorted(scores, key=scores.get) + [g for g in ranking if g not in scores]
            chosen.append({"group": best, "nodes": list(groups[best]), "drop_before": drop,
                           "drop_after": scores[best][0], "cost_saved": round(drop - scores[best][0], 6)})
            excluded.extend(groups[best])
            remaining.remove(best)
            drop = scores[best][0]
            best_path = paths[best]
        # Blocks chosen on a tie (no gain in the metric) may be unneeded once later blocks are float:
        # put each back into INT8 if the budget still holds without it.
        for entry in [c for c in chosen if c["cost_saved"] <= 0]:
            trial = [n for n in excluded if n not in set(entry["nodes"])]
            path = work / f"prune_{evaluations}.onnx"
            build(trial, path)
            evaluations += 1
            d = score(path)[0]
            bar.update(1, note=f"back to int8 {entry['group']}: {d:.4f}")
            if d <= max_drop:
                chosen.remove(entry)
                excluded, drop, best_path = trial, d, path
    return Budget(best_path, drop, chosen, evaluations)
