"""The numbers of a parity run: thresholds, one row per model and size, the report (JSON, Markdown, plot).

``mrdeploy.parity`` runs it; this module only holds and renders the result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mrdeploy.errors import ToleranceError


class ParityFailure(ToleranceError):
    """The bundle (or the ONNX model) broke a parity threshold; ``.report`` has every number."""

    def __init__(self, message: str, report: ParityReport):
        super().__init__(message)
        self.report = report


@dataclass
class Thresholds:
    """Limits a parity run must meet; None = not checked.

    ``max_top1_drop`` / ``max_miou_drop``: with labeled data, reference accuracy (mIoU) minus the
    candidate's; without labels, 1 - top-1 agreement (1 - mIoU agreement), an upper bound of the drop.
    """

    min_cosine: float | None = None
    max_abs_error: float | None = None
    max_top1_drop: float | None = None
    min_top1_agreement: float | None = None
    min_pixel_agreement: float | None = None
    min_miou_agreement: float | None = None
    max_miou_drop: float | None = None

    # (threshold field, row field, "min"|"max", shown name, task it applies to or None for all)
    CHECKS = (
        ("min_cosine", "cosine", "min", "cosine", None),
        ("max_abs_error", "max_abs", "max", "max abs error", None),
        ("max_top1_drop", "drop", "max", "top-1 drop", "classification"),
        ("min_top1_agreement", "top1_agreement", "min", "top-1 agreement", "classification"),
        ("min_pixel_agreement", "pixel_agreement", "min", "pixel agreement", "segmentation"),
        ("min_miou_agreement", "miou_agreement", "min", "mIoU agreement", "segmentation"),
        ("max_miou_drop", "drop", "max", "mIoU drop", "segmentation"),
    )

    def active(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ParityRow:
    """One model (or bundle profile) at one size, compared with its reference."""

    size: str
    side: float
    point: dict
    target: str  # "pytorch" | "onnx" | "bundle"
    series: str  # plot curve: "pytorch fp32", "onnx fp32", "bundle int8", ...
    profile: str | None = None
    backend: str | None = None
    precision: str | None = None
    action: str | None = None  # bundle rows: "exact" | "pad" | "resize"
    served: bool = False  # the Runner's own choice at this size
    in_profile: bool = True  # the size lies inside some profile's range
    reference: str | None = None  # what it is compared with: "pytorch" | "onnx" | None
    samples: int = 0
    max_abs: float | None = None
    mean_abs: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    pixel_agreement: float | None = None
    miou_agreement: float | None = None
    accuracy: float | None = None  # top-1 accuracy or mIoU on labeled data
    reference_accuracy: float | None = None
    drop: float | None = None
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.target == "bundle" and self.profile is None:
            return "bundle: refused by the policy"
        if self.target == "bundle":
            return f"bundle {self.profile} ({self.precision}, {self.action})"
        return self.series

    @property
    def gated(self) -> bool:
        return self.reference is not None


@dataclass
class ParityReport:
    bundle: str
    model: str
    task: str
    policy: str
    data: str
    labeled: bool
    samples: int
    references: dict  # {"onnx": path, "pytorch": spec | None, "checkpoint": path | None}
    profiles: list[dict]
    sizes: list[str]
    rows: list[ParityRow]
    thresholds: dict
    check_outside: bool = False
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        for r, row in zip(d["rows"], self.rows):
            r["name"] = row.name
        return d

    def summary_rows(self) -> list[dict]:
        """Per size: accuracy (or agreement) of pytorch, onnx and the served bundle row, and the served
        row's cosine vs ONNX: the short table for READMEs."""
        out = []
        for size in self.sizes:
            rows = [r for r in self.rows if r.size == size]
            by = {r.target: r for r in rows if r.target != "bundle"}
            served = next((r for r in rows if r.target == "bundle" and (r.served or r.profile is None)), None)
            out.append({"size": size, "pytorch": by.get("pytorch"), "onnx": by.get("onnx"), "bundle": served})
        return out

    def to_markdown(self, plot: str | None = "parity.png") -> str:
        from mrdeploy.report import fmt, md_table

        seg = self.task == "segmentation"
        acc_name = "mIoU" if seg else "top-1 acc"
        agr_name = "pixel agr" if seg else "top-1 agr"
        lines = [
            f"# Parity: {self.model} ({self.task})",
            "",
            f"- bundle: `{self.bundle}` (policy `{self.policy}`)",
            f"- references: ONNX `{self.references.get('onnx')}`"
            + (f", PyTorch `{self.references['pytorch']}`" if self.references.get("pytorch") else "")
            + (f" with checkpoint `{self.references['checkpoint']}`" if self.references.get("checkpoint") else ""),
            f"- data: {self.data}, {self.samples} samples per size",
            f"- thresholds: {', '.join(f'{k}={v}' for k, v in self.thresholds.items()) or 'none'}"
            + (" (also on padded/resized sizes)" if self.check_outside else ""),
            f"- result: **{'PASS' if self.passed else 'FAIL'}** ({self.seconds:.1f} s)",
            "",
            "## Summary per size",
            "",
        ]
        head = ["size"]
        has_pt = any(r.target == "pytorch" for r in self.rows)
        metric = "accuracy" if self.labeled else ("pixel_agreement" if seg else "top1_agreement")
        if self.labeled:
            head += [f"pytorch {acc_name}"] if has_pt else []
            head += [f"onnx {acc_name}", f"bundle {acc_name}"]
        else:
            head += [f"onnx {agr_name} vs pytorch"] if has_pt else []
            head += [f"bundle {agr_name} vs onnx"]
        head += ["bundle cosine vs onnx", "served by"]
        table = []
        for s in self.summary_rows():
            b, o, p = s["bundle"], s["onnx"], s["pytorch"]
            row = [s["size"]]
            if self.labeled:
                row += [fmt(p.accuracy)] if has_pt else []
                row += [fmt(o.accuracy if o else None), fmt(b.accuracy if b else None)]
            else:
                row += [fmt(getattr(o, metric) if o else None)] if has_pt else []
                row += [fmt(getattr(b, metric) if b else None)]
            row += [fmt(b.cosine, 6) if b else "-", _served_by(b, self.policy)]
            table.append(row)
        lines += [md_table(head, table, "l" + "r" * (len(head) - 2) + "l"), ""]
        if plot:
            lines += [f"![parity vs resolution]({plot})", ""]
        lines += ["## Profiles", ""]
        lines += [
            md_table(
                ["profile", "backend", "precision", "min", "opt", "max"],
                [[p["name"], p["backend"], p["precision"], _hw(p["min"]), _hw(p["opt"]), _hw(p["max"])] for p in self.profiles],
            ),
            "",
            "## Every row",
            "",
        ]
        head = ["size", "model", "vs", "max abs", "mean abs", "cosine", agr_name]
        head += ["mIoU agr"] if seg else []
        head += [acc_name, "drop", "check"] if self.labeled else ["drop", "check"]
        table = []
        for r in self.rows:
            if r.reference is None and r.accuracy is None and r.target != "bundle":
                continue  # an ONNX/PyTorch row with nothing to show (no labels, nothing to compare)
            row = [r.size + ("" if r.in_profile else " (outside)"), r.name, r.reference or "-", fmt(r.max_abs, 6),
                   fmt(r.mean_abs, 6), fmt(r.cosine, 6), fmt(r.pixel_agreement if seg else r.top1_agreement)]
            row += [fmt(r.miou_agreement)] if seg else []
            row += [fmt(r.accuracy)] if self.labeled else []
            row += [fmt(r.drop), "FAIL" if r.failures else ("ok" if r.reference and self._is_gated(r) else "-")]
            table.append(row)
        lines += [md_table(head, table), ""]
        if self.failures:
            lines += ["## Failures", "", *[f"- {f}" for f in self.failures], ""]
        return "\n".join(lines)

    def _is_gated(self, row: ParityRow) -> bool:
        return row.reference is not None and (row.target != "bundle" or row.action == "exact" or self.check_outside)

    def failure_message(self) -> str:
        sizes = sorted({f.split(" ", 1)[0] for f in self.failures}, key=self.sizes.index)
        head = (
            f"parity failed: {len(self.failures)} check(s) at {len(sizes)} size(s) "
            f"({', '.join(sizes)}); thresholds {', '.join(f'{k}={v}' for k, v in self.thresholds.items())}"
        )
        return "\n".join([head, *(f"  {f}" for f in self.failures)])

    def write(self, out: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
        """parity.json, parity.md and (``plot``) parity.png in ``out``; returns their paths."""
        from mrdeploy.report import plot_parity, write_report

        return write_report(self, out, "parity", plot_parity if plot else None)


def _served_by(row: ParityRow | None, policy: str) -> str:
    if row is None:
        return "-"
    if row.profile is None:
        return f"refused by policy '{policy}'"
    return f"{row.profile} ({row.precision}, {row.action})"


def _hw(shape: Sequence[int]) -> str:
    return f"{shape[-2]}x{shape[-1]}"
