"""`--method magnitude`: TF-MOT's unstructured prune_low_magnitude, the no-speedup reference.

Why a separate process: TensorFlow Model Optimization 0.8 only wraps tf_keras
(Keras 2) models, and TensorFlow picks tf_keras for ``tf.keras`` only when
``TF_USE_LEGACY_KERAS=1`` is set *before* it is imported. asp trains in Keras 3,
so `run_magnitude` starts ``python -m asp_export.prune.magnitude SPEC.json`` with that
variable set. The worker builds the run's model in Keras 3 exactly as every other
method does (same zoo builder, same seed, so the same initial weights), copies it
layer by layer into a tf_keras twin (checked equal on a probe batch), trains the
twin with the same data pipeline, epochs, batch size, learning rate and seed under a
polynomial sparsity schedule reaching ``--target-sparsity`` at the end of training
(``--finetune-epochs`` then continue with the masks fixed), strips the wrappers and
copies the weights back into the Keras 3 model.

The result has zeros but no fewer channels: pruned.keras is the same architecture as
dense.keras and report.json says so (``"structural_change": false``). Only chain
models (each layer reads the previous one: gasl-mnist, lenet5, lenet-300-100,
vgg16-cifar) can be twinned; branched models are refused with one line. A killed run
is not resumable mid-training: ``--resume`` restarts it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from asp_export.errors import AspError, UserInputError

log = logging.getLogger(__name__)

PRUNABLE = ("Conv1D", "Conv2D", "Conv3D", "Dense", "DepthwiseConv2D", "SeparableConv2D")


def run_magnitude(
    options, *, force: bool = False, resume: bool = False, run_dir: str | Path | None = None
) -> dict[str, Any]:
    """Run the magnitude baseline for `options` in a TF_USE_LEGACY_KERAS=1 subprocess.

    The caller owns the run directory (`run_lock`); `run_dir` is the one resumed (default
    `options.out`). With `force` an existing run is replaced only once the worker finished.

    Returns:
        The report dict the worker wrote to report.json.

    Raises:
        UserInputError: no --target-sparsity, a FLOPs target, or a model that cannot be twinned.
        AspError: the worker failed (its one-line reason is re-raised).
    """
    import contextlib
    import tempfile

    from asp_export.prune.select import validate
    from asp_export.rundir import RunDir, read_json, replacing

    validate(options, lambda: None)
    if options.target_sparsity is None:
        raise UserInputError(
            "--method magnitude needs --target-sparsity (the share of weights TF-MOT zeroes, e.g. 0.8)."
        )
    final = Path(run_dir) if resume and run_dir else Path(options.out)
    if not resume:
        RunDir.create(final, force=force, dry_run=True)  # refuse early, before any work
    # the worker writes into a fresh directory, or beside the run --force replaces (swapped in at the end)
    target = contextlib.nullcontext(RunDir(final)) if resume else replacing(final, force=force)
    with target as run, tempfile.TemporaryDirectory(prefix="asp-magnitude-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        error_path = Path(tmp) / "error.json"
        spec = {
            "options": options.to_dict(),
            "run_dir": str(run.root),
            "resume": resume,
            "error_file": str(error_path),
            "log_level": logging.getLogger("asp_export").getEffectiveLevel(),
        }
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        completed = subprocess.run(
            [sys.executable, "-m", "asp_export.prune.magnitude", str(spec_path)], env=env
        )
        if completed.returncode != 0:
            if error_path.exists():
                error = json.loads(error_path.read_text())
                cls = UserInputError if error.get("exit_code") == 2 else AspError
                raise cls(error["message"])
            raise AspError(
                f"The magnitude-pruning process failed with exit code {completed.returncode} "
                "(its output is above); rerun with `asp --verbose` for the traceback."
            )
    return read_json(RunDir(final).report_json)


# --- the worker (runs with TF_USE_LEGACY_KERAS=1) ---------------------------------------------


def _clean_config(layer_class, config: dict) -> dict:
    """A Keras 3 layer config reduced to what the tf_keras class accepts (weights are copied)."""
    accepted = set(inspect.signature(layer_class.__init__).parameters) | {"name", "trainable"}
    cleaned = {}
    for key, value in config.items():
        if key.endswith(("_initializer", "_regularizer", "_constraint")) or key not in accepted:
            continue
        cleaned[key] = value
    cleaned["dtype"] = "float32"
    return cleaned


def _chain_layers(model) -> list:
    """The model's layers after its Input, refusing anything that is not a simple chain.

    Calls and their inputs come from the flat graph (`asp_export.surgery.flatten`); a nested model
    is passed over here and refused by `_twin` (tf_keras cannot rebuild it).
    """
    from asp_export.surgery.flatten import flatten_model

    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    flat = flatten_model(model)
    previous = None
    for layer in layers:
        rec = flat.layers.get(layer.name)
        if rec is None or rec.obj is not layer:  # a nested model: inlined in the flat graph
            previous = None
            continue
        sources = [ref[0] for call in rec.calls for ref in call.inputs + call.kw_inputs]
        if (
            len(rec.calls) > 1
            or len(sources) > 1
            or (previous is not None and sources and sources[0] != previous)
        ):
            raise UserInputError(
                f"--method magnitude rebuilds the model in tf_keras and supports chain models only; "
                f"{model.name} branches at layer {layer.name}. Use a structured method for it."
            )
        previous = layer.name
    return layers


def _twin(model):
    """The same network in tf_keras, with the same weights."""
    import tf_keras

    twin_layers = [tf_keras.Input(shape=model.input_shape[1:], name="input")]
    for layer in _chain_layers(model):
        cls = getattr(tf_keras.layers, type(layer).__name__, None)
        if cls is None:
            raise UserInputError(
                f"--method magnitude cannot rebuild layer {layer.name} ({type(layer).__name__}) in tf_keras."
            )
        twin_layers.append(cls.from_config(_clean_config(cls, layer.get_config())))
    twin = tf_keras.Sequential(twin_layers, name=model.name)
    for layer in _chain_layers(model):
        twin.get_layer(layer.name).set_weights(layer.get_weights())
    return twin


def _worker(spec: dict) -> None:
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from asp_export import keras_io
    from asp_export._io import write_json_atomic
    from asp_export.prune import inputs, train
    from asp_export.prune.options import PruneOptions
    from asp_export.prune.report import build_report, model_figures, structure_string, write_report
    from asp_export.prune.select import check_exclude
    from asp_export.prune.sparsity import elementwise_sparsity, grouped_kernels
    from asp_export.rundir import RunDir
    from asp_export.surgery import plan as surgery_plan
    from asp_export.versions import package_versions

    options = PruneOptions.from_dict(spec["options"])
    model_source = inputs.model_source(options.model)
    dataset = inputs.load_data(options, model_source)
    inputs.warn_degenerate(options, dataset)
    train.set_determinism(options.train.seed)
    tf_keras.utils.set_random_seed(options.train.seed)
    strategy = train.make_strategy("none")
    model = inputs.build_model(options, model_source, dataset)
    check_exclude(model, options.sparsity.exclude)
    twin = _twin(model)  # refuses branched models before a run directory exists
    probe = dataset.sample(min(16, dataset.n_test), split="test")
    difference = float(
        np.max(np.abs(np.asarray(model(probe, training=False)) - twin(probe, training=False).numpy()))
    )
    if difference > 1e-4:
        raise AspError(
            f"The tf_keras twin of {model.name} differs from it by {difference:g}; cannot compare fairly."
        )
    run = RunDir.open(spec["run_dir"]) if spec["resume"] else RunDir.create(spec["run_dir"])
    if not spec["resume"]:
        write_json_atomic(
            run.config_json, inputs.config_record(options, model, model_source, dataset, strategy)
        )

    config = options.train
    from_logits = train.emits_logits(model)
    steps = config.steps_per_epoch or -(-dataset.n_train // config.batch_size)
    output_layer = model.layers[-1].name
    excluded = options.sparsity.exclude

    def wrap(layer):
        if type(layer).__name__ in PRUNABLE and layer.name not in (output_layer, *excluded):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=float(options.target_sparsity),
        begin_step=0,
        end_step=max(1, config.epochs * steps - 1),
        frequency=max(1, min(100, steps // 2 or 1)),
    )
    pruned_twin = tf_keras.models.clone_model(twin, clone_function=wrap)
    # prune_low_magnitude wraps the twin's own layers, so the initial weights are the twin's.
    pruned_twin.compile(
        optimizer=tf_keras.optimizers.Adam(config.learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )
    import time

    started = time.perf_counter()
    total_epochs = config.epochs + options.finetune_epochs
    for epoch in range(total_epochs):
        batches = dataset.train(
            config.batch_size,
            shuffle=True,
            seed=config.seed + epoch,
            repeat=config.steps_per_epoch is not None,
        )
        result = pruned_twin.fit(
            batches,
            initial_epoch=epoch,
            epochs=epoch + 1,
            steps_per_epoch=config.steps_per_epoch,
            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
            verbose=0,
        )
        train.check_loss({"loss": result.history["loss"][-1]}, "magnitude", epoch + 1, run)
        log.info(
            "magnitude epoch %d/%d: loss %.4f acc %.4f",
            epoch + 1,
            total_epochs,
            result.history["loss"][-1],
            result.history["accuracy"][-1],
        )
    seconds = time.perf_counter() - started
    stripped = tfmot.sparsity.keras.strip_pruning(pruned_twin)
    for layer in _chain_layers(model):
        layer.set_weights(stripped.get_layer(layer.name).get_weights())

    accuracy = train.evaluate(model, dataset, config.batch_size)
    keras_io.save_model(model, run.model_path("dense"))
    keras_io.save_model(model, run.model_path("pruned"))
    kernels = [k for k in grouped_kernels(model)]
    zero_fraction = float(
        sum(int(np.sum(np.asarray(k.variable) == 0)) for k in kernels)
        / max(sum(int(np.prod(k.variable.shape)) for k in kernels), 1)
    )
    layers = [
        {"name": k.name, "groups_before": len(k.norms()), "groups_after": len(k.norms())} for k in kernels
    ]
    identity = surgery_plan(model, threshold=0.0, exclude=[layer.name for layer in model.layers])
    figures = model_figures(model, accuracy=accuracy, path=run.model_path("pruned"))
    report = build_report(
        options,
        dense=figures,
        masked_accuracy=accuracy,
        pruned=dict(figures),
        surgery=None,
        finetuned=None,
        layers=layers,
        structure_live=structure_string(layers),
        elementwise_sparsity=elementwise_sparsity(model),
        plan=identity.to_dict(),
        target={
            "kind": "sparsity",
            "requested": float(options.target_sparsity),
            "achieved": round(zero_fraction, 6),
            "reached": bool(zero_fraction >= float(options.target_sparsity) - 0.01),
            "meaning": "fraction of the prunable non-output kernels' weights that are exactly 0 (TF-MOT)",
            "scope": "per-layer (TF-MOT)",
            "round_to": None,
        },
        dataset=dataset.name,
        devices=train.describe_devices(strategy),
        seconds=seconds,
        versions={
            **package_versions(),
            "tensorflow_model_optimization": tfmot.__version__,
            "tf_keras": tf_keras.__version__,
        },
        extra={
            "structural_change": False,
            "note": "Unstructured TF-MOT magnitude pruning: zeros, no fewer channels; "
            "pruned.keras is dense.keras (same architecture, same FLOPs).",
        },
    )
    write_report(run, report)
    train.write_state(run, complete=True)


def main(argv: list[str]) -> int:
    """Worker entry point: ``python -m asp_export.prune.magnitude SPEC.json``."""
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        print(
            "asp_export.prune.magnitude must run with TF_USE_LEGACY_KERAS=1 (run_magnitude sets it).",
            file=sys.stderr,
        )
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    level = spec.get("log_level", logging.INFO)
    logging.basicConfig(level=level, format="%(message)s")
    try:
        if level > logging.DEBUG:  # TensorFlow's C++ start-up lines, as the parent keeps them quiet
            from asp_export._tf import import_tensorflow_quietly

            import_tensorflow_quietly("tf_keras", "tensorflow_model_optimization")
        _worker(spec)
    except AspError as err:
        Path(spec["error_file"]).write_text(json.dumps({"message": str(err), "exit_code": err.exit_code}))
        return err.exit_code
    except ModuleNotFoundError as err:
        message = (
            f"--method magnitude needs {err.name} (pip install tensorflow-model-optimization tf-keras); "
            "the other methods do not."
        )
        Path(spec["error_file"]).write_text(json.dumps({"message": message, "exit_code": 2}))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
