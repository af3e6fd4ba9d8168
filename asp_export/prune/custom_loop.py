"""One training epoch through `strategy.run`, for strategies Keras' `model.fit` cannot drive.

Keras 3.15's TensorFlow trainer fails under MultiWorkerMirroredStrategy before
the first step (`_maybe_symbolic_build` reduces the first input batch with the
strategy, which collective all-reduce rejects: "Attempt to convert a value
(PerReplica ...) to a Tensor"; forcing past it fails again in its metric
reduction). This loop does what `fit` does for asp's models with public APIs
only, so `train.fit` keeps its checkpoints, NaN guard and callbacks:

* the loss is Keras' own: the compiled loss per example, averaged over the
  *global* batch (`tf.nn.compute_average_loss`), plus the model's added losses
  (the GASL guiding term) divided by the replica count -- exactly the scaling
  `fit` applies, so the optimizer's summed all-reduce gives the single-device
  update (tests/test_train.py compares them);
* callbacks (the proximal group-lasso step, TensorBoard, the progress bar) get
  the same `on_*` calls as under `fit`;
* it returns the metrics `fit` logs: loss, accuracy, val_loss, val_accuracy.
"""

from __future__ import annotations

from typing import Any


def needs_custom_loop(strategy) -> bool:
    """True for the strategies whose `model.fit` is broken on this Keras (multi-worker)."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class StrategyLoop:
    """Trains a compiled model with `strategy.run` (the model's own strategy), one epoch
    per `run_epoch` call, like one `model.fit` call that spans all epochs.

    Build it once per training stage (it creates metrics and optimizer slots in the
    strategy's scope and starts the callbacks) and call `finish` after the last epoch.
    """

    def __init__(
        self, model, callbacks: list, *, epochs: int, steps: int | None = None, verbose: int = 0
    ) -> None:
        import keras
        import tensorflow as tf

        self.model = model
        self.strategy = model.distribute_strategy
        self.batch_logs = bool(verbose)  # reading metrics every step costs a collective under multi-worker
        with self.strategy.scope():
            compiled = model.loss
            self._per_example_loss = type(compiled).from_config({**compiled.get_config(), "reduction": None})
            self._metrics = {
                "loss": keras.metrics.Mean(name="loss"),
                "accuracy": keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                "val_loss": keras.metrics.Mean(name="val_loss"),
                "val_accuracy": keras.metrics.SparseCategoricalAccuracy(name="val_accuracy"),
            }
            model.optimizer.build(model.trainable_variables)
        self.callbacks = keras.callbacks.CallbackList(
            callbacks, model=model, verbose=verbose, epochs=epochs, steps=steps
        )
        self._train_step = tf.function(self._distributed_train_step, reduce_retracing=True)
        self._test_step = tf.function(self._distributed_test_step, reduce_retracing=True)
        self.callbacks.on_train_begin()

    def finish(self) -> None:
        self.callbacks.on_train_end()  # TensorBoard closes its writers

    # --- per-replica work ------------------------------------------------------

    def _replica_train_step(self, x, y):
        import tensorflow as tf

        model = self.model
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = tf.nn.compute_average_loss(self._per_example_loss(y, y_pred))
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = model.optimizer.scale_loss(loss)  # mixed precision: a LossScaleOptimizer
        variables = model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        model.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        # `loss` is this replica's share; times the replica count it is the global-batch mean.
        batch = tf.shape(y)[0]
        self._metrics["loss"].update_state(loss * self.strategy.num_replicas_in_sync, sample_weight=batch)
        self._metrics["accuracy"].update_state(y, y_pred)

    def _replica_test_step(self, x, y):
        import tensorflow as tf

        y_pred = self.model(x, training=False)
        loss = tf.reduce_mean(self._per_example_loss(y, y_pred))
        if self.model.losses:
            loss += tf.add_n(self.model.losses)
        self._metrics["val_loss"].update_state(loss, sample_weight=tf.shape(y)[0])
        self._metrics["val_accuracy"].update_state(y, y_pred)

    def _distributed_train_step(self, x, y):
        self.strategy.run(self._replica_train_step, args=(x, y))

    def _distributed_test_step(self, x, y):
        self.strategy.run(self._replica_test_step, args=(x, y))

    # --- one epoch ---------------------------------------------------------------

    def run_epoch(self, epoch: int, batches, validation=None, steps: int | None = None) -> dict[str, Any]:
        """Train one pass over `batches` (or `steps` batches of a repeating dataset).

        Every worker must call this with the same dataset: the strategy splits each
        global batch between the replicas, and the collectives of each step need
        all of them.
        """
        for metric in self._metrics.values():
            metric.reset_state()
        self.callbacks.on_epoch_begin(epoch)
        distributed = self.strategy.experimental_distribute_dataset(batches)
        for step, (x, y) in enumerate(distributed):
            if steps is not None and step >= steps:
                break
            self.callbacks.on_train_batch_begin(step)
            self._train_step(x, y)
            self.callbacks.on_train_batch_end(
                step, self._results("loss", "accuracy") if self.batch_logs else None
            )
        logs = self._results("loss", "accuracy")
        if validation is not None:
            for x, y in self.strategy.experimental_distribute_dataset(validation):
                self._test_step(x, y)
            logs.update(self._results("val_loss", "val_accuracy"))
        self.callbacks.on_epoch_end(epoch, logs)
        return logs

    def _results(self, *names: str) -> dict[str, float]:
        return {name: float(self._metrics[name].result()) for name in names}
