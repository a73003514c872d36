"""Progress for long work (calibration, engine builds): a one-line bar on a TTY, silent otherwise.

``set_quiet(True)`` (the CLI's --quiet) silences it everywhere.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = bool(quiet)


@contextlib.contextmanager
def quiet_progress(quiet: bool = True) -> Iterator[None]:
    """Silence progress bars inside the ``with`` block (``quiet=False``: leave them as they are), then
    restore the previous setting: a library call's ``quiet=True`` does not silence the process for good."""
    global _quiet
    before = _quiet
    if quiet:
        _quiet = True
    try:
        yield
    finally:
        _quiet = before


def enabled() -> bool:
    return not _quiet and sys.stderr.isatty()


class Progress:
    """``with Progress(total, "calibrating small") as bar: ... bar.update(1, note="96x96")``."""

    def __init__(self, total: int | None, desc: str, show: bool | None = None):
        self.total, self.desc, self.done = total, desc, 0
        self.show = enabled() if show is None else show
        self.start = time.perf_counter()
        self.note = ""

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.note = note or self.note
        if self.show:
            self._draw()

    def _draw(self, end: str = "") -> None:
        elapsed = time.perf_counter() - self.start
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 24)
            text = f"\r{self.desc} [{bar:<24}] {self.done}/{self.total} {elapsed:5.1f}s {self.note}"
        else:
            text = f"\r{self.desc} {self.done} {elapsed:5.1f}s {self.note}"
        sys.stderr.write(text[:120].ljust(80) + end)
        sys.stderr.flush()

    def __enter__(self) -> Progress:
        if self.show:
            self._draw()
        return self

    def __exit__(self, *exc) -> None:
        if self.show:
            self._draw(end="\n")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc) as bar:
        for item in items:
            yield item
            bar.update(1)
