"""The accuracy budget: keep the fewest node blocks in float so the held-out drop meets ``--max-drop``.

A few evaluations per block at most, whatever the model:

1. **Rank once.** Each block is kept float alone (everything else INT8) and scored: its gain is how much
   the cosine drop falls: it is continuous over every held-out pair, where the top-1 flips of a model
   with one block of many kept float barely move and tie (on EfficientNet-Lite2 they did not single out
   the stem and first blocks that the cosine drop ranked first). One evaluation per block.
2. **Add blocks back in rank order.** Keeping the k most helpful blocks float is scored for a k found by
   bisection (the drop falls as k grows; about log2 of the block count evaluations). If even all blocks
   but the least helpful one kept float break the budget, no INT8 model meets it: BudgetError (a CalibrationError).
3. **Put back what did not help.** A chosen block whose own gain was zero (its cosine drop alone no lower
   than all INT8's) is put back into INT8 when the budget still holds without it.

Each evaluation quantizes the model with the chosen blocks float and scores it on the held-out samples;
``score`` returns a :class:`~mrdeploy.calibration.evaluate.Score` (the drop held to the budget, observed
drop, cosine drop, point estimate, the size it was worst at; the cosine drop ranks the blocks). From
``evaluate.OBSERVED_MIN_ROWS`` top-1 pairs on the drop is an upper bound of the estimate
(evaluate.upper_bound): the search stops at the first
model under the budget, and on a point estimate that is where noise made a model look good.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mrdeploy._progress import Progress
from mrdeploy.calibration.evaluate import Score
from mrdeploy.errors import BudgetError


@dataclass
class Budget:
    path: Path
    drop: float
    float_nodes: list[dict] = field(default_factory=list)
    evaluations: int = 0
    score: Score | None = None


def fit_budget(
    groups: Mapping[str, Sequence[str]],
    build: Callable[[Sequence[str], Path], Path],
    score: Callable[[Path], Score],
    start: Score,
    max_drop: float,
    work: Path,
    desc: str = "budget",
    name: str = "profile",
    metric: str = "top1",
) -> Budget:
    """Keep blocks of ``groups`` (block -> node names) float until the drop <= ``max_drop``; ``start`` is
    the score with every block in INT8."""
    blocks = list(groups)
    evaluations = 0
    cache: dict[tuple[str, ...], tuple[Path, Score]] = {}

    def evaluate(floated: Sequence[str], bar, note: str) -> tuple[Path, Score]:
        nonlocal evaluations
        key = tuple(sorted(floated))
        if key not in cache:
            path = work / f"budget_{evaluations}.onnx"
            build([n for g in floated for n in groups[g]], path)
            cache[key] = (path, score(path))
            evaluations += 1
            bar.update(1, note=f"{note}: {cache[key][1].drop:.4f}")
        return cache[key]

    def refuse(detail: str):
        return BudgetError(
            f"profile {name}: --max-drop {max_drop} ({metric}) cannot be met by any INT8 model: the drop is "
            f"{start.drop:.4f}{start.where} with every node in INT8, and {detail}; raise --max-drop, calibrate "
            "or hold out with more or other data, or build this profile in fp32")

    if len(blocks) < 2:
        raise refuse("the model has no block that could stay float while another stays INT8")
    with Progress(len(blocks) + max(1, len(blocks).bit_length()) + 2, desc) as bar:
        alone = {g: evaluate([g], bar, f"float {g}")[1] for g in blocks}
        ranking = sorted(blocks, key=lambda g: (alone[g].cosine, alone[g].drop, len(groups[g])))
        worst = len(blocks) - 1  # every block float but the least helpful one
        _, most = evaluate(ranking[:worst], bar, f"{worst} blocks float")
        if most.drop > max_drop:
            bound = ("" if most.drop <= most.estimate else f", the upper bound of an estimated {most.estimate:.4f} "
                     "that more held-out data narrows")
            raise refuse(f"still {most.drop:.4f}{most.where} with {worst} of {len(blocks)} blocks kept float "
                         f"(only {ranking[-1]} in INT8{bound})")
        lo, hi = 0, worst  # drop(lo) > max_drop (lo = 0: all INT8), drop(hi) <= max_drop
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if evaluate(ranking[:mid], bar, f"{mid} blocks float")[1].drop <= max_drop:
                hi = mid
            else:
                lo = mid
        chosen = list(ranking[:hi])
        for g in [g for g in chosen if alone[g].cosine >= start.cosine]:  # no gain alone: try it back in INT8
            trial = [c for c in chosen if c != g]
            if trial and evaluate(trial, bar, f"back to int8 {g}")[1].drop <= max_drop:
                chosen = trial
        path, final = evaluate(chosen, bar, "final")
    float_nodes = [{"group": g, "nodes": list(groups[g]), "drop_alone": round(alone[g].drop, 6),
                    "gain_alone": round(start.drop - alone[g].drop, 6),
                    "cosine_gain_alone": round(start.cosine - alone[g].cosine, 6)} for g in chosen]
    return Budget(path, final.drop, float_nodes, evaluations, final)
