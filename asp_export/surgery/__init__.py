"""Channel surgery: read a Keras model's graph, plan which channels go, rebuild it smaller; count FLOPs.

`flatten` reads the model's config into one flat functional graph, `graph` groups the channels
that must be cut together, `layers` knows how to slice each layer type, `_plan` decides (`plan`),
`_apply` cuts (`apply`, `mask`), `_shrink` is `asp shrink`, `flops` counts 2 x MACs and parameters
(public path: `asp_export.flops`).

    >>> from asp_export import surgery
    >>> p = surgery.plan(model, threshold=1e-3)
    >>> small = surgery.apply(model, p)
"""

from asp_export.surgery._apply import apply, mask, prune_model
from asp_export.surgery._plan import PLAN_SCHEMA_VERSION, GroupPlan, Plan, plan
from asp_export.surgery._shrink import make_dead_channels, report_path, shrink

__all__ = [
    "PLAN_SCHEMA_VERSION",
    "GroupPlan",
    "Plan",
    "apply",
    "make_dead_channels",
    "mask",
    "plan",
    "prune_model",
    "report_path",
    "shrink",
]
