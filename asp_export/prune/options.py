"""The options of one `asp prune` run (train + sparsity + surgery), from the CLI or a run's config.json.

`refuse_changed_options` keeps `--resume` honest: a resumed run continues exactly as configured.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asp_export.errors import RunDirError, UserInputError
from asp_export.input_range import check_input_range
from asp_export.prune.sparsity import SparsityConfig
from asp_export.prune.train import TrainConfig


@dataclass(frozen=True)
class SurgeryConfig:
    """When a group counts as dead, and how the smaller network is shaped.

    Args:
        threshold: a group (filter/neuron) is dead when its L2 norm is at or
            below this. The proximal solver sets dead groups to exactly zero,
            so the default only has to be small; it matches the paper's
            |w| <= 1e-3 element-wise rule.
        round_to: round kept channels per group up to a multiple of this
            (runtime-friendly widths); 1 keeps exactly the live channels.
            Default 8: on onnxruntime CPU, rounded widths turned 0.81 of the
            FLOPs cut into time against 0.45 unrounded (demo model, batch 32;
            docs/results.md), and were faster in absolute terms.
    """

    threshold: float = 1e-3
    round_to: int = 8
    min_channels: int = 1

    def __post_init__(self) -> None:
        if not self.threshold >= 0:
            raise UserInputError(f"threshold must be >= 0, got {self.threshold}.")
        if self.round_to < 1 or self.min_channels < 1:
            raise UserInputError("--round-to and --min-channels must be >= 1.")


@dataclass(frozen=True)
class PruneOptions:
    """Everything `asp prune` needs; the CLI builds exactly this object."""

    model: str
    out: str
    data: str = "digits"
    data_dir: str | None = None
    input_shape: tuple[int, int, int] | None = None
    input_range: str | None = None  # 0-1 | 0-255 | -1-1; None: read from the model, else 0-1
    val_fraction: float = 0.1
    augment: bool = False
    finetune_epochs: int = 0
    finetune_lr: float | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    surgery: SurgeryConfig = field(default_factory=SurgeryConfig)
    target_flops: float | None = None  # fraction of dense FLOPs to remove (asp_export/prune/targets.py)
    target_sparsity: float | None = None  # fraction of dense params to remove
    target_scope: str | None = None  # global | global-raw | layer | uniform; default per method
    target_elementwise: float | None = None  # the paper's element-wise sparsity of the cut model

    def __post_init__(self) -> None:
        from asp_export.prune.targets import validate_target

        validate_target(self.target_flops, self.target_sparsity, self.target_scope, self.target_elementwise)
        if self.input_range is not None:
            check_input_range(self.input_range)
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserInputError(f"val fraction must be in [0, 1), got {self.val_fraction}.")
        if self.finetune_epochs < 0:
            raise UserInputError(f"finetune epochs must be >= 0, got {self.finetune_epochs}.")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["train"] = self.train.to_dict()
        data["sparsity"] = self.sparsity.to_dict()
        data["input_shape"] = list(self.input_shape) if self.input_shape else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneOptions:
        data = dict(data)
        data["train"] = TrainConfig(**data["train"])
        data["sparsity"] = SparsityConfig.from_dict(data["sparsity"])
        data["surgery"] = SurgeryConfig(**data["surgery"])
        if data.get("input_shape"):
            data["input_shape"] = tuple(data["input_shape"])
        return cls(**data)


_TRAIN_KEYS = {
    "epochs",
    "batch_size",
    "learning_rate",
    "steps_per_epoch",
    "seed",
    "mixed_precision",
    "strategy",
}


_SPARSITY_KEYS = {
    "method",
    "lambda_group",
    "lambda_var",
    "solver",
    "group_weighting",
    "include_classifier",
    "exclude",
}


_SURGERY_KEYS = {"threshold", "round_to", "min_channels"}


def refuse_changed_options(options: PruneOptions, given: Mapping[str, Any], root: Path) -> None:
    """Refuse options given with `--resume` that differ from the run's (in CLI names).

    A resumed run continues exactly as configured: a different epoch count, target, method
    or data would mix two runs in one directory (training to the old epochs, or calling a
    complete run of one target a run of another), so none is applied.

    Raises:
        RunDirError: the differing options, as `--name=GIVEN (run: STORED)` (exit 2).
    """
    stored = options.to_dict()
    for section in ("train", "sparsity", "surgery"):
        stored.update(stored.pop(section))
    differing = []
    for key, value in given.items():
        flag = _FLAGS.get(key, f"--{key.replace('_', '-')}")
        if key == "out":
            if Path(value).resolve() != Path(root).resolve():
                differing.append(f"{flag}={value} (resuming {root})")
            continue
        wanted, had = json.loads(json.dumps(value)), stored.get(key)
        if wanted != had:
            differing.append(f"{flag}={_shown(wanted)} (run: {_shown(had)})")
    if differing:
        raise RunDirError(
            f"--resume continues {root} as its config.json says, but these options differ: "
            f"{', '.join(differing)}. Drop them to resume, or start a new run with them "
            "(another --out, or --force to replace this one)."
        )


_FLAGS = {"learning_rate": "--lr"}


def _shown(value: Any) -> str:
    if value is None:
        return "not set"
    return value if isinstance(value, str) else json.dumps(value)


def options_from_cli(flat: dict[str, Any], resume_dir: str | None = None) -> PruneOptions:
    """Build PruneOptions from the CLI's flat options; unset options keep library defaults."""
    flat = dict(flat)
    if resume_dir:
        return PruneOptions(model=flat.get("model", "gasl-mnist"), out=resume_dir)
    train_config = TrainConfig(**{k: flat.pop(k) for k in list(flat) if k in _TRAIN_KEYS})
    sparsity_config = SparsityConfig(**{k: flat.pop(k) for k in list(flat) if k in _SPARSITY_KEYS})
    surgery_config = SurgeryConfig(**{k: flat.pop(k) for k in list(flat) if k in _SURGERY_KEYS})
    model = flat.pop("model", "gasl-mnist")
    data = flat.pop("data", "digits")
    out = flat.pop("out", None) or f"runs/{Path(model).stem}-{data.replace(':', '-').replace('/', '_')}"
    return PruneOptions(
        model=model,
        data=data,
        out=out,
        train=train_config,
        sparsity=sparsity_config,
        surgery=surgery_config,
        **flat,
    )
