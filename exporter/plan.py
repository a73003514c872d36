"""Moved to :mod:`mrdeploy.planning` (the planner belongs with the profiles, not with the exporter).

A thin re-export for ``exporter/build.py`` (``file_policy``), which another change is rewriting.
"""

from mrdeploy.planning import Bucket, Choice, Plan, brute_force_cost, file_policy, plan_profiles, sizes_from
from mrdeploy.runtime.images import IMAGE_SUFFIXES

__all__ = ["IMAGE_SUFFIXES", "Bucket", "Choice", "Plan", "brute_force_cost", "file_policy", "plan_profiles",
           "sizes_from"]
