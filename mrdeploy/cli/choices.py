"""Click choices read from the backend registry when the command line is parsed (not when it is imported),
so a backend registered after ``import mrdeploy.cli`` is a valid ``--backend`` / ``--target`` value."""

from __future__ import annotations

from collections.abc import Callable

import click


class RegistryChoice(click.Choice):
    """A ``click.Choice`` whose choices are ``names()`` at parse and help time."""

    def __init__(self, names: Callable[[], list[str]]):
        self._names = names
        super().__init__([], case_sensitive=True)

    @property
    def choices(self):
        return tuple(self._names())

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ assigns it; the registry is the source
        pass


def backends() -> RegistryChoice:
    """Every registered backend (build-engine --backend, run --backend)."""
    from mrdeploy.runtime.backends.registry import backend_names

    return RegistryChoice(backend_names)


def build_backends() -> RegistryChoice:
    """Every registered backend, and ``auto`` (build-engine --backend: the fastest per profile)."""
    from mrdeploy.runtime.backends.registry import backend_names

    return RegistryChoice(lambda: [*backend_names(), "auto"])


def calibration_targets() -> RegistryChoice:
    """The registered backends that take Q/DQ models (calibrate --target)."""

    def names() -> list[str]:
        from mrdeploy.calibration.qdq import targets

        return targets()

    return RegistryChoice(names)
