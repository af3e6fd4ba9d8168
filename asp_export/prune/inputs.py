"""What a prune run starts from: the model (zoo name or .keras file), its data, and its config.json record."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from asp_export.errors import UserInputError
from asp_export.prune.options import PruneOptions
from asp_export.rundir import SCHEMA_VERSION
from asp_export.versions import asp_version, package_versions

log = logging.getLogger(__name__)


def model_source(model: str) -> str:
    if model.endswith(".keras") or Path(model).exists():
        return "file"
    from asp_export.models import get_model_entry

    get_model_entry(model)  # unknown names fail here, with a did-you-mean
    return "zoo"


def load_data(options: PruneOptions, model_source: str):
    """The dataset at the model's input shape and pixel range (`asp_export.input_range`)."""
    from asp_export.data import load_dataset
    from asp_export.input_range import resolve_input_range

    input_shape = options.input_shape
    model = None
    if model_source == "file":
        from asp_export.keras_io import load_keras_model

        model = load_keras_model(options.model)
        input_shape = input_shape or tuple(model.input_shape[1:])
    elif input_shape is None:
        from asp_export.models import get_model_entry

        input_shape = get_model_entry(options.model).default_input_shape
    input_range, why = resolve_input_range(options.input_range, model)
    dataset = load_dataset(
        options.data,
        data_dir=options.data_dir,
        input_shape=input_shape,
        val_fraction=options.val_fraction,
        seed=options.train.seed,
        augment=options.augment,
        input_range=input_range,
    )
    log.info("input range %s: %s", input_range, why)  # after loading: bad data is one line
    return dataset


def warn_degenerate(options: PruneOptions, dataset) -> None:
    """Say so when options that run will produce little of use (docs/reliability.md)."""
    config = options.train
    if config.learning_rate > 0.1:
        log.warning(
            "--lr %g is far above Adam's useful range (1e-4..1e-2); the run stops if the loss explodes.",
            config.learning_rate,
        )
    if config.batch_size > dataset.n_train:
        log.warning(
            "--batch-size %d is larger than the %d training images: %s.",
            config.batch_size,
            dataset.n_train,
            "every epoch is one step" if config.steps_per_epoch is None else "every batch repeats images",
        )
    if options.val_fraction > 0.5:
        log.warning(
            "--val-fraction %g holds out more than it trains on: %d training images, %d for validation.",
            options.val_fraction,
            dataset.n_train,
            dataset.n_val,
        )


def build_model(options: PruneOptions, model_source: str, dataset):
    if model_source == "zoo":
        from asp_export.models import create_model, get_model_entry

        try:
            return create_model(
                options.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes
            )
        except ValueError as err:  # Keras: e.g. a pooling/conv stack that shrinks the image to nothing
            default = ",".join(map(str, get_model_entry(options.model).default_input_shape))
            reason = str(err).split(". ")[0].strip().rstrip(".")
            raise UserInputError(
                f"{options.model} cannot be built for input shape "
                f"{','.join(map(str, dataset.input_shape))} ({reason}); give a larger --input-shape "
                f"(its default is {default}) or another --model."
            ) from None
    from asp_export.keras_io import load_keras_model

    model = load_keras_model(options.model)
    outputs = model.output_shape[-1]
    if outputs != dataset.num_classes:
        raise UserInputError(
            f"{options.model} has {outputs} outputs but {dataset.name} has {dataset.num_classes} classes; "
            "give a model whose last layer matches the dataset."
        )
    return model


def config_record(options: PruneOptions, model, model_source: str, dataset, strategy) -> dict[str, Any]:
    from asp_export.prune.train import describe_devices

    return {
        "schema_version": SCHEMA_VERSION,
        "asp_version": asp_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": options.model,
        "model_source": model_source,
        "data": dataset.describe(),
        "input_shape": list(dataset.input_shape),
        "input_range": dataset.input_range,
        "num_classes": dataset.num_classes,
        "seed": options.train.seed,
        "method": options.sparsity.method,
        "options": options.to_dict(),
        "versions": package_versions(),
        "devices": describe_devices(strategy),
    }
