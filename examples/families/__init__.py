"""Models from five multi-resolution paper families, written as their papers' code writes them, and
:mod:`examples.families.deploy`, which takes each through export -> plan -> build (fp32, int8) -> parity."""
