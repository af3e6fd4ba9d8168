"""The training loop: GASL sparsity training with checkpoints, resume and tf.distribute.

Epochs are driven one `fit` call at a time, each with its own shuffle seed
(seed + epoch), so a run resumed from the checkpoint of epoch N sees exactly
the batches an uninterrupted run would have seen. After every epoch the loss
is checked for NaN/Inf and explosion, and only then is the checkpoint written (atomically),
so the last checkpoint on disk is always a good one.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from asp_export._io import atomic_path, write_json_atomic
from asp_export.errors import RunDirError, TrainingError, UserInputError
from asp_export.prune.custom_loop import StrategyLoop, needs_custom_loop
from asp_export.prune.sparsity import SparsityConfig, attach, make_proximal_callback
from asp_export.rundir import SCHEMA_VERSION, RunDir, read_json
from asp_export.versions import visible_gpu

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "none", "mirrored", "multi-worker")
CHECKPOINTS_KEPT = 2
#: An epoch loss above this has exploded: cross-entropy near chance is ln(classes) (2.3 for 10), and
#: GASL's guiding term is at most lambda_var / eps = 1e4 per layer even when every group collapses.
EXPLODED_LOSS = 1e6
_warned: set[str] = set()


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Defaults (Adam, lr 1e-3, batch 32, 15 epochs) reach the README demo's
    figures on two CPU cores; the authors used Adam, lr 1e-4, batch 100 for
    100k steps (docs/method.md).
    """

    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 1e-3
    steps_per_epoch: int | None = None
    seed: int = 0
    mixed_precision: bool = False
    strategy: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1:  # 0 would write an untrained dense.keras and call it trained
            raise UserInputError(
                f"--epochs must be >= 1, got {self.epochs}; to cut a model trained elsewhere without "
                "training it, use `asp shrink MODEL.keras`."
            )
        if self.batch_size < 1:
            raise UserInputError(f"batch size must be >= 1, got {self.batch_size}.")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise UserInputError(f"learning rate must be a finite number > 0, got {self.learning_rate}.")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise UserInputError(f"steps per epoch must be >= 1, got {self.steps_per_epoch}.")
        if self.strategy not in STRATEGIES:
            raise UserInputError(f"Unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}.")

    def to_dict(self) -> dict:
        return asdict(self)


# --- devices and strategies ---------------------------------------------------


def make_strategy(name: str):
    """The tf.distribute strategy for `name`; `auto` mirrors over several GPUs, else default.

    GPU memory growth is switched on first (it must precede the runtime's start): TensorFlow would
    otherwise take every visible GPU's whole memory for as long as the process lives.
    """
    import tensorflow as tf

    from asp_export._tf import enable_memory_growth

    enable_memory_growth(tf)
    gpus = tf.config.list_physical_devices("GPU")  # logical devices would start the TF context too early
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "none"
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        _check_tf_config(os.environ.get("TF_CONFIG", ""))
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserInputError(f"Unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}.")


def _check_tf_config(raw: str) -> None:
    """Refuse a missing or malformed TF_CONFIG in one line (TensorFlow would hang or trace back)."""
    import json

    hint = "see docs/distributed.md for an example"
    if not raw.strip():
        raise UserInputError(f"--strategy multi-worker needs TF_CONFIG describing the cluster; {hint}.")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise UserInputError(
            f"TF_CONFIG is not valid JSON ({error.msg} at char {error.pos}); {hint}."
        ) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not any(
        isinstance(cluster.get(k), list) for k in ("worker", "chief")
    ):
        raise UserInputError(f'TF_CONFIG has no "cluster": {{"worker": ["host:port", ...]}}; {hint}.')
    kind = task.get("type") if isinstance(task, dict) else None
    index = task.get("index") if isinstance(task, dict) else None
    if kind not in ("worker", "chief") or not isinstance(index, int) or index < 0:
        raise UserInputError(f'TF_CONFIG needs "task": {{"type": "worker", "index": N}}; {hint}.')
    hosts = cluster.get(kind)
    if not isinstance(hosts, list) or index >= len(hosts):
        count = len(hosts) if isinstance(hosts, list) else 0
        raise UserInputError(
            f"TF_CONFIG task {kind} {index} is out of range: the cluster lists {count} {kind}(s)."
        )


def describe_devices(strategy) -> dict:
    """What training ran on, for config.json."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    details = []
    for gpu in gpus:
        try:
            details.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
        except (RuntimeError, ValueError):
            details.append(gpu.name)
    name = type(strategy).__name__
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "MultiWorkerMirroredStrategy"  # TF's class is CollectiveAllReduceStrategy
    devices = {
        "strategy": name,
        "num_replicas": int(strategy.num_replicas_in_sync),
        "gpus": details,
        "device": "GPU" if gpus else "CPU",
        "logical_devices": [d.name for d in tf.config.list_logical_devices()],
        "replica_devices": _replica_devices(strategy),
    }
    machine_gpu = None if gpus else visible_gpu()
    if machine_gpu:
        devices["warning"] = (
            f"nvidia-smi lists {machine_gpu} but TensorFlow sees no GPU, so training ran on the CPU; "
            "install the CUDA wheels (pip install -e '.[gpu]') and check that TensorFlow and the driver "
            "match (python -c \"import tensorflow as tf; print(tf.config.list_physical_devices('GPU'))\")."
        )
        if devices["warning"] not in _warned:  # config.json and report.json both describe the devices
            _warned.add(devices["warning"])
            log.warning("%s", devices["warning"])
    return devices


def _replica_devices(strategy) -> list[str]:
    try:
        return [str(device) for device in strategy.extended.worker_devices]
    except (AttributeError, RuntimeError):  # the default strategy has no device list
        return []


def set_determinism(seed: int) -> None:
    """Same seed on CPU -> same weights -> same report."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except AttributeError:  # pragma: no cover - very old TF
        pass


def set_mixed_precision(enabled: bool) -> None:
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16" if enabled else "float32")


def to_float32(model):
    """A float32 copy of a model trained under mixed precision (for saving and export)."""
    import keras

    if all(getattr(layer.dtype_policy, "name", "float32") == "float32" for layer in model.layers):
        return model
    config = model.get_config()
    for layer in config["layers"]:
        layer["config"]["dtype"] = "float32"
    clone = keras.Model.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


# --- checkpoints and state ----------------------------------------------------


def checkpoint_path(run: RunDir, epoch: int) -> Path:
    return run.checkpoints / f"epoch-{epoch:03d}.keras"


def _random_state_path(run: RunDir, epoch: int) -> Path:
    return run.checkpoints / f"epoch-{epoch:03d}.random.json"


def checkpoint_files(run: RunDir, epoch: int) -> tuple[Path, Path]:
    """Everything one checkpoint is: the model with its optimizer, and the dropout random state."""
    return checkpoint_path(run, epoch), _random_state_path(run, epoch)


def latest_checkpoint(run: RunDir) -> tuple[int, Path] | None:
    """(epochs completed, path) of the newest complete checkpoint, if any."""
    if not run.checkpoints.is_dir():
        return None
    found = []
    for path in run.checkpoints.glob("epoch-*.keras"):
        try:
            found.append((int(path.stem.split("-")[1]), path))
        except (IndexError, ValueError):
            continue
    return max(found) if found else None


def resume_checkpoint(run: RunDir, strategy, epochs: int) -> tuple[int, Path] | None:
    """The checkpoint a resumed run continues from: the newest one or, across several
    workers, the newest one *every* worker has -- a kill can land between two workers'
    checkpoint writes, and workers that start from different epochs would deadlock."""
    found = latest_checkpoint(run)
    if not needs_custom_loop(strategy):
        return found
    import tensorflow as tf

    mine = found[0] if found else 0
    # Minimum over workers with the SUM all-reduce the strategy has: count who holds each epoch.
    holders = strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.one_hot(mine, epochs + 1)), axis=None
    )
    common = int(tf.where(holders > 0)[0, 0])
    if common == 0:
        return None
    path = checkpoint_path(run, common)
    if not path.is_file():
        raise TrainingError(
            f"Another worker can only resume from epoch {common}, but {path} is gone "
            f"(asp keeps the last {CHECKPOINTS_KEPT}); restart every worker with --force."
        )
    if common != mine:
        log.warning("Resuming from epoch %d, the last one every worker has (this one has %d).", common, mine)
    return common, path


def _random_states(model) -> list:
    """The dropout layers' random-generator state variables, in model order.

    A `.keras` file stores them but `load_model` does not restore them (Keras 3.15:
    a loaded Dropout starts from a fresh seed), so checkpoints keep them beside the model.
    """
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _save_checkpoint(model, run: RunDir, epoch: int) -> None:
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    # The random state first: the checkpoint's appearance is what marks the epoch complete.
    states = [[int(x) for x in v.numpy().ravel()] for v in _random_states(model)]
    write_json_atomic(
        _random_state_path(run, epoch), {"schema_version": SCHEMA_VERSION, "seed_generator_states": states}
    )
    with atomic_path(checkpoint_path(run, epoch)) as tmp:
        model.save(tmp)  # a compiled model's .keras holds the optimizer state
    for old_epoch in range(epoch - CHECKPOINTS_KEPT, 0, -1):
        if not checkpoint_path(run, old_epoch).exists():
            break
        for stale in checkpoint_files(run, old_epoch):
            stale.unlink(missing_ok=True)


def restore_random_state(model, run: RunDir, epoch: int) -> None:
    """Put the dropout generators back where the checkpoint of `epoch` left them, so a
    resumed run draws the same dropout masks as an uninterrupted one."""
    variables = _random_states(model)
    path = _random_state_path(run, epoch)
    if not variables:
        return
    if not path.is_file():  # a run directory from before asp kept them
        log.warning("%s is missing: dropout masks will differ from an uninterrupted run.", path)
        return
    states = read_json(path).get("seed_generator_states", [])
    if len(states) != len(variables):
        raise RunDirError(
            f"{path} holds {len(states)} random states but the checkpoint has {len(variables)} dropout "
            "generators; delete the checkpoint to resume from the one before."
        )
    for variable, state in zip(variables, states, strict=True):
        variable.assign(np.asarray(state, dtype=variable.dtype).reshape(variable.shape))


def write_state(run: RunDir, **fields) -> None:
    state = {"schema_version": SCHEMA_VERSION}
    if run.state_json.exists():
        state.update(read_json(run.state_json))
    state.update(fields)
    write_json_atomic(run.state_json, state)


# --- the loop -----------------------------------------------------------------


def compile_model(model, learning_rate: float, *, from_logits: bool = True) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )


def fit(
    model,
    dataset,
    run: RunDir,
    train_config: TrainConfig,
    sparsity_config: SparsityConfig,
    *,
    initial_epoch: int = 0,
    stage: str = "train",
    tensorboard: bool = True,
) -> list[dict]:
    """Train `model` (already compiled) on `dataset` with GASL, epoch by epoch.

    Writes a checkpoint per epoch (the last `CHECKPOINTS_KEPT` are kept) and
    `state.json`; raises `TrainingError` on a NaN/Inf or exploded (> `EXPLODED_LOSS`) loss,
    leaving the last good checkpoint in place.

    Returns:
        One dict of metrics per epoch trained (loss, accuracy, val_loss, val_accuracy, seconds).
    """
    import keras

    history: list[dict] = []
    verbose = 1 if _interactive() else 0  # non-interactive: one log line per epoch (below)
    with attach(model, sparsity_config) as kernels:
        callbacks = [_progress_bar(train_config.epochs)] if verbose else []
        if sparsity_config.solver == "proximal" and sparsity_config.effective_lambda_group > 0 and kernels:
            callbacks.append(make_proximal_callback(kernels, sparsity_config))
        if tensorboard:
            callbacks.append(
                keras.callbacks.TensorBoard(
                    log_dir=str(run.logs / stage), write_graph=False, update_freq="epoch"
                )
            )
        validation = dataset.val(train_config.batch_size) if dataset.n_val else None
        loop = None
        if needs_custom_loop(model.distribute_strategy):  # Keras' fit is broken there
            loop = StrategyLoop(
                model,
                callbacks,
                epochs=train_config.epochs,
                steps=train_config.steps_per_epoch,
                verbose=verbose,
            )
        for epoch in range(initial_epoch, train_config.epochs):
            repeat = train_config.steps_per_epoch is not None
            batches = dataset.train(
                train_config.batch_size, shuffle=True, seed=train_config.seed + epoch, repeat=repeat
            )
            started = time.perf_counter()
            if loop is not None:
                metrics = loop.run_epoch(epoch, batches, validation, steps=train_config.steps_per_epoch)
            else:
                result = model.fit(
                    batches,
                    validation_data=validation,
                    initial_epoch=epoch,
                    epochs=epoch + 1,
                    steps_per_epoch=train_config.steps_per_epoch,
                    callbacks=callbacks,
                    shuffle=False,  # the tf.data pipeline is already shuffled with a per-epoch seed
                    verbose=verbose,
                )
                metrics = {key: float(values[-1]) for key, values in result.history.items()}
            metrics["epoch"] = epoch + 1
            metrics["seconds"] = round(time.perf_counter() - started, 3)
            check_loss(metrics, stage, epoch + 1, run)
            history.append(metrics)
            if stage == "train":
                _save_checkpoint(model, run, epoch + 1)
                write_state(
                    run, epochs_completed=epoch + 1, history=_all_history(run, history, initial_epoch)
                )
            log.info(
                "%s epoch %d/%d: loss %.4f acc %.4f%s (%.1fs)",
                stage,
                epoch + 1,
                train_config.epochs,
                metrics.get("loss", float("nan")),
                metrics.get("accuracy", float("nan")),
                f" val_acc {metrics['val_accuracy']:.4f}" if "val_accuracy" in metrics else "",
                metrics["seconds"],
            )
        if loop is not None:
            loop.finish()
    return history


def check_loss(metrics: dict, stage: str, epoch: int, run: RunDir) -> None:
    """Stop the run (TrainingError, exit 1) when an epoch's loss is NaN/Inf or has exploded."""
    losses = [v for k, v in metrics.items() if "loss" in k]
    if all(math.isfinite(v) and abs(v) <= EXPLODED_LOSS for v in losses):
        return
    loss = metrics.get("loss", float("nan"))
    what = f"became {loss}" if not math.isfinite(loss) else f"exploded to {loss:.3g}"
    raise TrainingError(
        f"{stage}: loss {what} in epoch {epoch}; stopped. "
        f"The last good checkpoint is kept in {run.checkpoints}. "
        "Lower --lr (Adam: 1e-4..1e-2) or --lambda-var, or check the data for NaN/Inf."
    )


def _all_history(run: RunDir, new: list[dict], initial_epoch: int) -> list[dict]:
    old: list[dict] = []
    if initial_epoch and run.state_json.exists():
        old = [h for h in read_json(run.state_json).get("history", []) if h["epoch"] <= initial_epoch]
    return old + new


def _progress_bar(total_epochs: int):
    """Keras' progress bar, but counting epochs of the whole run, not of one fit call."""
    import keras

    class ProgressBar(keras.callbacks.ProgbarLogger):
        def set_params(self, params):
            super().set_params({**params, "epochs": total_epochs})

    return ProgressBar()


def _interactive() -> bool:
    import sys

    return sys.stderr.isatty()


def chance_accuracy(dataset) -> float:
    """The accuracy of always answering the test split's most frequent class."""
    import numpy as np

    labels = np.asarray(dataset.labels("test")).reshape(-1)
    return float(np.bincount(labels).max() / labels.size) if labels.size else 0.0


def evaluate(model, dataset, batch_size: int) -> float:
    """Top-1 accuracy on the test split (argmax: the same for logits and probabilities)."""
    import keras
    import numpy as np

    correct = 0
    total = 0
    for x, y in dataset.test(batch_size):
        logits = model(x, training=False)
        correct += int(np.sum(np.argmax(keras.ops.convert_to_numpy(logits), axis=-1) == np.asarray(y)))
        total += int(np.asarray(y).shape[0])
    if total == 0:
        raise UserInputError(f"The test split of {dataset.name} is empty; nothing to evaluate.")
    return correct / total


def emits_logits(model) -> bool:
    """False when the model ends in a softmax (then the loss takes probabilities)."""
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", str(activation))
    return not (type(last).__name__ == "Softmax" or name == "softmax")


def load_checkpoint(path: Path):
    import keras

    try:
        return keras.saving.load_model(path, compile=True, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - any load failure means an unusable checkpoint
        raise RunDirError(
            f"Checkpoint {path} cannot be loaded ({err}); delete it to resume from the one before."
        ) from None
