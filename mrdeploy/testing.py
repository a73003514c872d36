"""Parity as a one-line test in a user's pytest suite::

    from mrdeploy.testing import assert_parity

    def test_bundle_matches_model():
        assert_parity("build/bundle", "model.onnx", sizes=[96, 128, (200, 160)], min_cosine=0.999)

An AssertionError carries the failing checks and the table of every size, so a CI log says what broke.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from mrdeploy.parity import ParityFailure, ParityReport, Thresholds, parity


def assert_parity(
    bundle: str | os.PathLike,
    reference: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    sizes: str | Sequence | None = None,
    data: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    samples: int = 16,
    min_cosine: float | None = 0.999,
    max_top1_drop: float | None = None,
    max_abs_error: float | None = None,
    min_top1_agreement: float | None = None,
    min_pixel_agreement: float | None = None,
    min_miou_agreement: float | None = None,
    max_miou_drop: float | None = None,
    check_outside: bool = False,
    model_args: Mapping | None = None,
    out: str | os.PathLike | None = None,
) -> ParityReport:
    """Run :func:`mrdeploy.parity.parity` and raise AssertionError (message + per-row table) if any
    threshold fails; returns the report when everything passes."""
    th = Thresholds(
        min_cosine=min_cosine, max_abs_error=max_abs_error, max_top1_drop=max_top1_drop,
        min_top1_agreement=min_top1_agreement, min_pixel_agreement=min_pixel_agreement,
        min_miou_agreement=min_miou_agreement, max_miou_drop=max_miou_drop,
    )
    try:
        return parity(
            bundle, reference, checkpoint=checkpoint, data=data, sizes=sizes, samples=samples, thresholds=th,
            check_outside=check_outside, model_args=model_args, out=out, plot=out is not None,
        )
    except ParityFailure as e:
        raise AssertionError(f"{e}\n\n{format_table(e.report)}") from None


def format_table(report: ParityReport) -> str:
    """A plain-text table of every row (fits a terminal; failing rows marked)."""
    seg = report.task == "segmentation"
    head = ["size", "model", "vs", "max abs", "cosine", "pixel agr" if seg else "top-1 agr", "drop", ""]
    rows = []
    for r in report.rows:
        if r.reference is None and r.target != "bundle":
            continue  # the reference models themselves: nothing compared
        agr = r.pixel_agreement if seg else r.top1_agreement
        rows.append([
            r.size, r.name, r.reference or "-",
            "-" if r.max_abs is None else f"{r.max_abs:.3g}",
            "-" if r.cosine is None else f"{r.cosine:.6f}",
            "-" if agr is None else f"{agr:.3f}",
            "-" if r.drop is None else f"{r.drop:.3f}",
            "FAIL" if r.failures else "",
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])
