"""The pruning methods `asp prune --method` offers, and how each one chooses channels.

Every structured method ends in the same surgery (`asp_export.surgery`); they
differ in how they train and in how they rank channels:

| method | training | channel score | default scope |
| --- | --- | --- | --- |
| ``gasl`` | group lasso + guiding 1/variance term (prune.sparsity) | kernel group L2 norm | uniform |
| ``ssl`` | group lasso only (Wen et al. 2016) | kernel group L2 norm | uniform |
| ``none`` | plain | kernel group L2 norm | uniform |
| ``l1-filter`` | plain (Li et al. 2017) | kernel L1 norm | uniform |
| ``slimming`` | L1 on BatchNormalization gammas (Liu et al. 2017) | abs(gamma) | global |
| ``magnitude`` | TF-MOT prune_low_magnitude, own process (asp_export.prune.magnitude) | -- | -- |

Without a target, gasl/ssl/none cut the groups whose norm is <= ``--threshold``
(the original `asp prune` behaviour); l1-filter and slimming need a target
(``--target-flops`` / ``--target-sparsity``) because their scores have no
natural zero. With a target, `asp_export.prune.targets.reach` picks the cut. The default
scope of gasl/ssl/none was chosen by measurement on the validation split
(benchmarks/compare_scopes.py, docs/results.md section 8): ``uniform`` kept the most
accuracy on average; the raw global ranking (``global-raw``) left the model at chance.
"""

from __future__ import annotations

from dataclasses import dataclass

from asp_export.errors import UserInputError


@dataclass(frozen=True)
class Method:
    """How one method trains and ranks channels."""

    name: str
    summary: str
    score: str  # "l2", "l1" or "gamma"
    scope: str  # default target scope
    needs_target: bool = False
    needs_batch_norm: bool = False


METHOD_TABLE: dict[str, Method] = {
    "gasl": Method("gasl", "group lasso + attention (guiding 1/variance) term", "l2", "uniform"),
    "ssl": Method("ssl", "group lasso only (Wen et al. 2016)", "l2", "uniform"),
    "none": Method("none", "plain training, prune by group L2 norm", "l2", "uniform"),
    "l1-filter": Method(
        "l1-filter",
        "plain training, prune lowest-L1 filters (Li et al. 2017)",
        "l1",
        "uniform",
        needs_target=True,
    ),
    "slimming": Method(
        "slimming",
        "L1 on BatchNorm gammas, prune lowest |gamma| (Liu et al. 2017)",
        "gamma",
        "global",
        needs_target=True,
        needs_batch_norm=True,
    ),
    "magnitude": Method(
        "magnitude", "TF-MOT prune_low_magnitude (unstructured; no speedup)", "none", "global"
    ),
}


METHODS = tuple(METHOD_TABLE)  # `asp prune --method` choices, in the table's order


def get_method(name: str) -> Method:
    if name not in METHOD_TABLE:
        raise UserInputError(f"Unknown method {name!r}; valid: {', '.join(METHOD_TABLE)}.")
    return METHOD_TABLE[name]
