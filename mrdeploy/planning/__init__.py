"""Resolution profiles planned from the sizes real data has (``mrdeploy profiles plan``).

- :mod:`.sizes`   the sizes of a folder of images (headers only) or of a text file of ``HxW [COUNT]`` lines
- :mod:`.search`  the search for the K buckets that minimize the padded pixels
- :mod:`.plan`    :func:`plan_profiles`, the :class:`Plan` it returns and the profiles file it writes

It sits beside the profiles it plans (``mrdeploy.runtime.profiles``), not with the exporter; numpy only.
The formulation is in :mod:`mrdeploy.planning.plan`.
"""

from mrdeploy.planning.plan import Bucket, Choice, Plan, file_policy, plan_profiles
from mrdeploy.planning.search import brute_force_cost
from mrdeploy.planning.sizes import sizes_from

__all__ = ["Bucket", "Choice", "Plan", "brute_force_cost", "file_policy", "plan_profiles", "sizes_from"]
