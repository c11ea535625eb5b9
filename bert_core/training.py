"""The one training loop that pretraining and fine-tuning share.

    set_precision("fp16")                           # before building the model
    model = ...                                     # a Keras 3 model, called as model(features, training=, ops=)
    trainer = Trainer(model, loss_fn, optimizer, TrainLoopConfig(output_dir=..., num_train_steps=...))
    result = trainer.train(dataset)                 # resumes from output_dir if it holds a checkpoint
    metrics = trainer.evaluate(eval_dataset, max_steps=100)

`loss_fn(outputs, features, ops) -> (loss, metrics)`: `loss` a scalar, `metrics` a dict of scalars
(averaged over batches) or of `(total, count)` pairs (summed, then divided: exact weighted means).
`ops` (bert_core.ops) is chosen once, when the training step is built (`ops.for_training`, logged
as "ops: ..."), and passed to the model, the loss and a BertOptimizer; evaluation uses ops.PLAIN.

One update of the weights ("a step") is:
  for each of num_accumulation_steps micro-batches:       [jit_compile=True under --xla]
      forward, loss (x loss scale under fp16), backward; add the gradients to the accumulators
  one allreduce of the accumulated gradients over ranks (Horovod; fp16 on the wire if asked)
  global-norm clipping (at clip_norm, or clip_norm x loss scale on still-scaled fp16 gradients)
  optimizer update (LossScaleOptimizer under fp16: skipped and the scale halved on overflow)
With one micro-batch per update all of it is one tf.function (no accumulators); with several, the
micro-batches run in one function and the allreduce + clip + update in another.

Checkpoints and summaries go to config.output_dir (local or gs://) through a
bert_core.run_dir.RunDirectory, which owns their layout and guarantees: whole checkpoints only, each
rank's input position in them, resume from the newest (`trainer.train` does it; `restore_weights`
loads only the weights, for evaluating or exporting a run).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import math
import os
import time
from typing import Any, Callable, Mapping, Protocol

import keras
import tensorflow as tf

from bert_core import distributed, ops as ops_lib, optimization, storage
from bert_core.choices import Precision
from bert_core.run_dir import CheckpointDir, RunDirectory
from bert_core.errors import UserError

LossFn = Callable[[Any, Mapping[str, tf.Tensor], ops_lib.Ops], "tuple[tf.Tensor, dict[str, Any]]"]

_POLICIES = {"fp32": "float32", "fp16": "mixed_float16", "bf16": "mixed_bfloat16"}


def set_precision(dtype: Precision) -> None:
    """Set Keras' global dtype policy; call before building the model."""
    if dtype not in _POLICIES:
        raise UserError(f"--dtype: expected one of fp32, fp16, bf16 (got {dtype!r})")
    keras.mixed_precision.set_global_policy(_POLICIES[dtype])


def wrap_optimizer(optimizer: keras.optimizers.Optimizer, dtype: Precision, initial_scale: float = 2.0 ** 15,
                   dynamic_growth_steps: int = 2000) -> keras.optimizers.Optimizer:
    """fp16 needs dynamic loss scaling; fp32 and bf16 use the optimizer as it is."""
    if dtype == "fp16" and not isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
        return keras.mixed_precision.LossScaleOptimizer(optimizer, initial_scale=initial_scale,
                                                        dynamic_growth_steps=dynamic_growth_steps)
    return optimizer


class WeightsIO(Protocol):
    """How the model's weights are written and read inside a checkpoint directory."""

    def save(self, model: keras.Model, prefix: str) -> None: ...

    def restore(self, model: keras.Model, prefix: str) -> None: ...


def _keyed(variables) -> dict[str, tf.Variable]:
    """Variables keyed by position, as tf.Variables for tf.train.Checkpoint.

    Not by Keras path: Keras numbers layer names per process (`dense_34`), so a second instance of
    the same model would not match; the order of a model's variables is fixed by its code."""
    return {f"{i:05d}": distributed._tf_variable(v) for i, v in enumerate(variables)}


class KerasWeightsIO:
    """Default weights format: every model variable by its Keras path, in a TF checkpoint."""

    def save(self, model, prefix):
        tf.train.Checkpoint(variables=_keyed(model.variables)).write(prefix)

    def restore(self, model, prefix):
        tf.train.Checkpoint(variables=_keyed(model.variables)).read(prefix).assert_existing_objects_matched()


class GoogleWeightsIO:
    """Weights under Google's TF1 names (bert_core.checkpoints), so Google's code and other tools read
    our checkpoints. For bert_core.modeling models (they list their names in checkpoint_variables)."""

    def save(self, model, prefix):
        from bert_core.checkpoints import save_google_checkpoint

        save_google_checkpoint(model, prefix)

    def restore(self, model, prefix):
        from bert_core.checkpoints import load_google_checkpoint

        load_google_checkpoint(model, prefix, strict=True)


@dataclasses.dataclass
class TrainLoopConfig:
    output_dir: str
    num_train_steps: int
    num_accumulation_steps: int = 1
    clip_norm: float | None = 1.0
    dtype: Precision = "fp32"
    xla: bool = False
    save_checkpoints_steps: int = 1000
    keep_checkpoints: int = 5
    log_every_steps: int = 100
    fp16_allreduce: bool = False
    summaries: bool = True
    checkpoints: bool = True  # False: the loop writes none (bert smoke-test)
    stop_on_nonfinite_loss: bool = True  # fp32/bf16: a NaN loss stops the run (fp16 skips the step)
    history_limit: int = 10000  # rows of per-step history kept in TrainResult (the most recent)
    work_dir: str | None = None  # gs:// output_dir only: the node-local directory the loop works in

    def __post_init__(self):
        if self.num_train_steps < 0:
            raise UserError(f"--num_train_steps must be >= 0 (got {self.num_train_steps})")
        if self.num_accumulation_steps < 1:
            raise UserError(f"--num_accumulation_steps must be >= 1 (got {self.num_accumulation_steps})")
        if self.save_checkpoints_steps < 1:
            raise UserError(f"--save_checkpoints_steps must be >= 1 (got {self.save_checkpoints_steps})")
        if self.keep_checkpoints < 1:
            raise UserError(f"--keep_checkpoints must be >= 1 (got {self.keep_checkpoints})")


@dataclasses.dataclass
class TrainResult:
    global_step: int
    loss: float
    metrics: dict[str, float]
    sequences_per_second: float
    resumed_from: int | None
    history: list[dict[str, float]]


def _as_metric(v) -> tuple[tf.Tensor, tf.Tensor]:
    """A metric value as (total, count): a (total, count) pair as given, a scalar as (value, 1)."""
    if isinstance(v, (tuple, list)):
        return tf.cast(v[0], tf.float32), tf.cast(v[1], tf.float32)
    return tf.cast(v, tf.float32), tf.constant(1.0)


def _means(totals: Mapping[str, list]) -> dict[str, float]:
    """{name: [total, count]} -> {name: total / count}."""
    return {k: float(t / c) if c else float("nan") for k, (t, c) in totals.items()}


XLA_CPU_RUNTIME_FLAG = "--xla_cpu_use_thunk_runtime=false"


def prefer_legacy_xla_cpu_runtime() -> str | None:
    """For --xla on a machine without a GPU: add `--xla_cpu_use_thunk_runtime=false` to XLA_FLAGS
    (XLA's older CPU runtime; TF 2.18 defaults to the thunk runtime, with which BERT-Mini's training
    step took 0.79 s on 2 cores instead of 0.66 s). Left alone when XLA_FLAGS already chooses the
    runtime. XLA reads XLA_FLAGS at the process's first compilation, so this counts only before it
    (always so for `bert pretrain` / `bert finetune`). Returns the line to log, or None."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_thunk_runtime" in flags or tf.config.list_physical_devices("GPU"):
        return None
    os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_RUNTIME_FLAG}".strip()
    return (f"xla on CPU: XLA_FLAGS += {XLA_CPU_RUNTIME_FLAG} (XLA's older CPU runtime, faster for this "
            f"step; set xla_cpu_use_thunk_runtime in XLA_FLAGS yourself to choose)")


class Trainer:
    """Trains `model` on `loss_fn` with `optimizer`; see the module docstring for one step."""

    def __init__(self, model: keras.Model, loss_fn: LossFn, optimizer: keras.optimizers.Optimizer,
                 config: TrainLoopConfig, dist: distributed.Distributed | None = None,
                 weights_io: WeightsIO | None = None,
                 callbacks: list[Callable[["Trainer", int, dict], None]] | None = None,
                 log: Callable[[str], None] | None = None):
        self.model = model
        self.loss_fn = loss_fn
        self.config = config
        self.optimizer = wrap_optimizer(optimizer, config.dtype)
        self.dist = dist or distributed.current()
        self.weights_io = weights_io or KerasWeightsIO()
        self.callbacks = list(callbacks or [])
        self._log = log or (lambda line: print(line, flush=True))
        self.run_dir = RunDirectory(config.output_dir, self.dist, config.work_dir, config.keep_checkpoints, self._log)
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.fp16 = isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer)
        self._built = False
        self._accumulators: list[tf.Variable] = []
        self._summary_writer = None
        self._step_fn = None  # forward..update in one graph (one micro-batch per update)
        self._micro_fn = None
        self._apply_fn = None
        self._eval_fn = None
        self.ops: ops_lib.Ops | None = None  # chosen when the training step is built

    # ------------------------------------------------------------------ logging
    def log(self, line: str) -> None:
        if self.dist.is_chief:
            self._log(line)

    # ------------------------------------------------------------------ building
    def _build(self, features) -> None:
        if self._built:
            return
        if not self.model.built or not self.model.trainable_variables:
            self.model(features, training=False)
        tvars = self.model.trainable_variables
        self.optimizer.build(tvars)
        if self.config.num_accumulation_steps > 1:
            self._accumulators = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False,
                                              name=f"accum_{i}") for i, v in enumerate(tvars)]
        self._make_step_functions()
        self._built = True

    def _make_step_functions(self) -> None:
        model, loss_fn, opt, cfg = self.model, self.loss_fn, self.optimizer, self.config
        tvars = model.trainable_variables
        n_acc = cfg.num_accumulation_steps
        fp16 = self.fp16
        accumulators = self._accumulators

        # The one choice of ops for the training step (bert_core.ops), passed to the model, the loss
        # and the optimizer.
        ops, line = ops_lib.for_training(xla=cfg.xla)
        self.ops = ops
        self.log(line)
        inner = opt.inner_optimizer if fp16 else opt
        if isinstance(inner, optimization.BertOptimizer):
            inner.ops = ops
        if cfg.xla and (line := prefer_legacy_xla_cpu_runtime()):
            self.log(line)

        def forward_backward(features):
            with tf.GradientTape() as tape:
                outputs = model(features, training=True, ops=ops)
                loss, metrics = loss_fn(outputs, features, ops)
                loss = tf.cast(loss, tf.float32)
                objective = loss / n_acc
                if fp16:
                    objective = opt.scale_loss(objective)
            grads = tape.gradient(objective, tvars)
            grads = [tf.zeros(v.shape, tf.float32) if g is None else tf.cast(tf.convert_to_tensor(g), tf.float32)
                     for g, v in zip(grads, tvars)]
            return loss, metrics, grads

        if n_acc > 1:
            def micro(features):
                loss, metrics, grads = forward_backward(features)
                for acc, g in zip(accumulators, grads):
                    acc.assign_add(g)
                return loss, metrics, []
        else:
            micro = forward_backward

        dist = self.dist
        clip_norm = cfg.clip_norm
        fp16_wire = cfg.fp16_allreduce
        step = self.global_step

        def apply(grads):
            if n_acc > 1:
                grads = [tf.identity(a) for a in accumulators]
            grads = dist.allreduce(grads, fp16=fp16_wire)  # ONE allreduce per update
            norm = tf.linalg.global_norm(grads)
            scale = tf.identity(opt.dynamic_scale) if fp16 else tf.constant(1.0)
            clipping = contextlib.nullcontext()
            if clip_norm is not None and not fp16 and isinstance(opt, optimization.BertOptimizer):
                # Clipping applied by the optimizer as it updates: no pass of its own over the gradients.
                clipping = opt.gradient_factor(optimization.clip_factor(norm, clip_norm))
            elif clip_norm is not None:
                # Clipping still-scaled fp16 gradients at clip_norm x scale equals clipping unscaled
                # ones at clip_norm; an overflow makes the norm inf, the gradients NaN, and the
                # LossScaleOptimizer skips the update and halves the scale.
                grads, _ = tf.clip_by_global_norm(grads, clip_norm * scale, use_norm=norm)
            with clipping:
                opt.apply(grads, tvars)
            if n_acc > 1:
                for a in accumulators:
                    a.assign(tf.zeros_like(a))
            step.assign_add(1)
            return norm / scale

        if n_acc == 1 and not (cfg.xla and dist.size > 1):
            # One micro-batch per update: forward, backward, allreduce, clip and update as ONE graph,
            # so no gradient leaves it and TF can overlap the update of one variable with the rest
            # (measured: 25 ms of a 0.9 s MiniLM fine-tuning update on 2 CPU cores).
            def whole_step(features):
                loss, metrics, grads = forward_backward(features)
                return loss, metrics, apply(grads)

            self._step_fn = tf.function(whole_step, jit_compile=cfg.xla or None, reduce_retracing=True)
            return
        self._step_fn = None
        self._micro_fn = tf.function(micro, jit_compile=cfg.xla or None, reduce_retracing=True)
        # Horovod's collectives are not XLA ops: with several ranks the update runs as a plain graph.
        self._apply_fn = tf.function(apply, reduce_retracing=True)

    # ------------------------------------------------------------------ training
    def train(self, dataset: tf.data.Dataset) -> TrainResult:
        """Train to config.num_train_steps, resuming from the latest checkpoint in output_dir."""
        cfg = self.config
        iterator = iter(dataset)
        batch, resumed_from = self._resume(iterator)
        start = int(self.global_step.numpy())
        self.run_dir.start_history(start)
        micro = first_batch_size(batch)
        clock = _Throughput(micro * cfg.num_accumulation_steps * self.dist.size, start, cfg.num_train_steps)
        self.log(f"training: steps {start}->{cfg.num_train_steps}, {self.dist.size} rank(s), {clock.per_update} "
                 f"sequences per update ({micro} x {cfg.num_accumulation_steps} micro-batches x {self.dist.size} "
                 f"ranks), dtype {cfg.dtype}, xla {cfg.xla}")
        history: collections.deque = collections.deque(maxlen=cfg.history_limit)
        loss, metrics = float("nan"), {}
        while int(self.global_step.numpy()) < cfg.num_train_steps:
            loss, totals, grad_norm = self._update(iterator, batch)  # forward, backward, allreduce, clip, step
            batch = None
            step = int(self.global_step.numpy())
            if cfg.stop_on_nonfinite_loss and not self.fp16 and not math.isfinite(loss):
                raise UserError(f"the training loss became {loss} at step {step} (dtype {cfg.dtype}); "
                                f"lower --learning_rate or raise --num_warmup_steps")
            clock.tick(step)
            logged = {}
            if step % cfg.log_every_steps == 0 or step in (start + 1, cfg.num_train_steps):
                loss, metrics, logged = self._report(step, loss, totals, grad_norm, clock)
            else:
                metrics = _means(totals)
            row = {"step": step, "loss": loss, **metrics, **logged}
            history.append(row)
            if cfg.checkpoints and (step % cfg.save_checkpoints_steps == 0 or step == cfg.num_train_steps):
                self.save_checkpoint(iterator)
            for cb in self.callbacks:
                cb(self, step, row)
        self.run_dir.upload_summaries()
        return TrainResult(global_step=int(self.global_step.numpy()), loss=loss, metrics=metrics,
                           sequences_per_second=clock.overall(), resumed_from=resumed_from, history=list(history))

    def _resume(self, iterator) -> tuple[Any, int | None]:
        """Build the model on the first batch, resuming from the latest checkpoint if there is one
        (its input position first, so that batch is the next one), then give every rank rank 0's
        weights, optimizer slots, loss scale and step. Returns (the first batch, the step resumed from)."""
        latest = self.run_dir.sync()
        if latest is not None:
            self.run_dir.restore_input_position(latest, iterator)
        first = self._next(iterator)
        self._build(first)
        if latest is not None:
            with self.run_dir.reading(latest):
                self._check_state_fits(latest)
                self.weights_io.restore(self.model, latest.weights)
                self._state_checkpoint().read(latest.state).assert_existing_objects_matched()
            self.log(f"resumed from {self.run_dir.published(latest)} at step {latest.step}")
        # All state exists before the first step here, so one broadcast covers it; Horovod's usual
        # "after the first step" is only for optimizers that create their slots lazily.
        if self.dist.size > 1:
            self.dist.broadcast_variables(self.model.variables + self.optimizer.variables + [self.global_step])
        return first, latest.step if latest is not None else None

    def _check_state_fits(self, ckpt: CheckpointDir) -> None:
        """One line, before reading it, if ckpt's optimizer state is not this optimizer's: saved with
        another --optimizer_type, or across fp16 and fp32/bf16 (fp16 keeps a loss scale and its counter
        beside the slots). Resuming is continuing one run exactly, so the run keeps its optimizer;
        starting a new run from the checkpoint's weights is --init_checkpoint."""
        saved = tf.train.load_checkpoint(ckpt.state)
        shapes, dtypes = saved.get_variable_to_shape_map(), saved.get_variable_to_dtype_map()
        was = {k: (shapes[k], dtypes[k]) for k in shapes if k.startswith("optimizer/")}
        now = {f"optimizer/{k}/.ATTRIBUTES/VARIABLE_VALUE": (v.shape.as_list(), v.dtype.base_dtype)
               for k, v in _keyed(self.optimizer.variables).items()}
        if was != now:
            published = self.run_dir.published(ckpt)
            weights = storage.join(published, storage.basename(ckpt.weights))
            raise UserError(f"{published}: its optimizer state does not fit this run's (--dtype={self.config.dtype}; "
                            f"fp16 keeps a loss scale that fp32 and bf16 do not, and each --optimizer_type its own "
                            f"slots): resume with the --dtype and --optimizer_type the run started with, or start "
                            f"a new --output_dir with --init_checkpoint={weights}")

    def _update(self, iterator, batch=None) -> tuple[float, dict, tf.Tensor]:
        """One update of the weights (module docstring): `batch` (or the next one) and the rest of the
        micro-batches. Returns the mean loss, each metric's [total, count] and the gradient norm."""
        losses, totals = [], {}
        for _ in range(self.config.num_accumulation_steps):
            batch = batch if batch is not None else self._next(iterator)
            if self._step_fn is not None:
                loss, metrics, grad_norm = self._step_fn(batch)
            else:
                loss, metrics, grads = self._micro_fn(batch)
            batch = None
            losses.append(loss)
            for k, v in metrics.items():
                t, c = _as_metric(v)
                mt = totals.setdefault(k, [0.0, 0.0])
                mt[0] += t
                mt[1] += c
        if self._step_fn is None:
            grad_norm = self._apply_fn(grads)
        return float(tf.add_n(losses).numpy()) / len(losses), totals, grad_norm

    def _report(self, step: int, loss: float, totals: dict, grad_norm, clock: "_Throughput"):
        """Log a progress line and write summaries; with several ranks, of the mean over ranks.
        Returns (loss, metrics, {learning_rate, sequences_per_second}) as logged."""
        if self.dist.size > 1:
            loss, metrics = self._mean_over_ranks(loss, totals)
        else:
            metrics = _means(totals)
        sps, lr, scale = clock.window(), self.current_learning_rate(), self.loss_scale()
        self.log(f"step {step}/{self.config.num_train_steps}  loss {loss:.4f}  lr {lr:.3e}  {sps:.1f} seq/s"
                 f"{clock.eta(step)}" + (f"  loss_scale {scale:g}" if scale is not None else ""))
        summary = {"loss": loss, "learning_rate": lr, "sequences_per_second": sps,
                   "grad_norm": float(grad_norm.numpy()), **metrics}
        if scale is not None:
            summary["loss_scale"] = scale
        self._summary(summary, step)
        self.run_dir.append_history({"step": step, **summary})
        return loss, metrics, {"learning_rate": lr, "sequences_per_second": sps}

    def _mean_over_ranks(self, loss: float, mtotals: dict) -> tuple[float, dict[str, float]]:
        names = sorted(mtotals)
        vec = [loss, 1.0] + [float(x) for k in names for x in mtotals[k]]
        (summed,) = self.dist.allreduce_sum([tf.constant(vec, tf.float64)])
        summed = summed.numpy()
        metrics = {k: float(summed[2 + 2 * i] / summed[3 + 2 * i]) for i, k in enumerate(names)}
        return float(summed[0] / summed[1]), metrics

    @staticmethod
    def _next(iterator):
        try:
            return next(iterator)
        except StopIteration:
            raise UserError("the training data ran out before --num_train_steps; repeat the dataset "
                            "or lower --num_train_steps") from None

    def _summary(self, values: Mapping[str, float], step: int) -> None:
        if not (self.config.summaries and self.dist.is_chief):
            return
        if self._summary_writer is None:
            self._summary_writer = tf.summary.create_file_writer(self.run_dir.summaries_dir)
        with self._summary_writer.as_default(step=step):
            for k, v in values.items():
                tf.summary.scalar(k, v)
        self._summary_writer.flush()

    def current_learning_rate(self) -> float:
        lr = self.optimizer.learning_rate
        return float(lr.numpy() if hasattr(lr, "numpy") else lr)

    def loss_scale(self) -> float | None:
        return float(self.optimizer.dynamic_scale.numpy()) if self.fp16 else None

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, iterator=None) -> str | None:
        """Every rank: checkpoint the current step (with each rank's input position if `iterator`)."""
        path = self.run_dir.save(int(self.global_step.numpy()), iterator, self._write_checkpoint)
        if path:
            self.log(f"saved {path}")
        return path

    def _write_checkpoint(self, ckpt: CheckpointDir) -> None:
        self.weights_io.save(self.model, ckpt.weights)
        self._state_checkpoint().write(ckpt.state)

    def _state_checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(
            step=self.global_step,
            optimizer=_keyed(self.optimizer.variables),
            model_state=_keyed(self.model.non_trainable_variables))  # RNG seeds for dropout, etc.

    def restore_weights(self) -> int | None:
        """Every rank: load the weights and step of the latest checkpoint in output_dir (a gs:// one is
        downloaded first), for evaluating, predicting or exporting it. None if there is none."""
        latest = self.run_dir.sync()
        if latest is None:
            return None
        with self.run_dir.reading(latest):
            self.weights_io.restore(self.model, latest.weights)
        self.global_step.assign(latest.step)
        self.log(f"restored the weights of {self.run_dir.published(latest)} (step {latest.step})")
        return latest.step

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, dataset: tf.data.Dataset, max_steps: int | None = None,
                 output_json: str | None = None) -> dict[str, float]:
        """Mean loss and metrics over up to max_steps batches on every rank, combined over ranks.

        Returns {"global_step", "loss", <metrics>}; the chief writes it as JSON if output_json is given."""
        if self._eval_fn is None:
            model, loss_fn = self.model, self.loss_fn

            def eval_step(features):
                outputs = model(features, training=False)
                loss, metrics = loss_fn(outputs, features, ops_lib.PLAIN)
                return tf.cast(loss, tf.float32), {k: _as_metric(v) for k, v in metrics.items()}

            if self.config.xla and (line := prefer_legacy_xla_cpu_runtime()):
                self.log(line)
            self._eval_fn = tf.function(eval_step, jit_compile=self.config.xla or None, reduce_retracing=True)
        totals: dict[str, list] = {"loss": [0.0, 0.0]}
        for i, batch in enumerate(dataset):
            if max_steps is not None and i >= max_steps:
                break
            if not self.model.built:
                self.model(batch, training=False)
            loss, metrics = self._eval_fn(batch)
            totals["loss"][0] += float(loss)
            totals["loss"][1] += 1.0
            for k, (t, c) in metrics.items():
                mt = totals.setdefault(k, [0.0, 0.0])
                mt[0] += float(t)
                mt[1] += float(c)
        names = list(totals)
        if self.dist.size > 1:
            flat = self.dist.allreduce_sum([tf.constant([totals[k][0], totals[k][1]], tf.float64) for k in names])
            totals = {k: [float(v[0]), float(v[1])] for k, v in zip(names, flat)}
        result = {"global_step": int(self.global_step.numpy())}
        result.update({k: (t / c if c else float("nan")) for k, (t, c) in totals.items()})
        if output_json and self.dist.is_chief:
            storage.write_json(output_json, result)
        return result


def first_batch_size(features) -> int:
    """The leading dimension of the first tensor in a batch (a dict, tuple or tensor)."""
    leaf = tf.nest.flatten(features)[0]
    return int(leaf.shape[0])


class _Throughput:
    """Sequences/s since the last progress line, and the run's pace for the ETA and the result,
    timed from the end of the first step (which includes tracing and compilation)."""

    def __init__(self, per_update: int, start_step: int, last_step: int):
        self.per_update, self.last_step = per_update, last_step
        self._first = start_step + 1
        self._window_start, self._window_steps = time.perf_counter(), 0
        self._timed_start, self._timed_steps = None, 0
        self._window_rate = 0.0

    def tick(self, step: int) -> None:
        self._window_steps += 1
        if step == self._first:
            self._timed_start, self._timed_steps = time.perf_counter(), 0
        else:
            self._timed_steps += 1

    def window(self) -> float:
        """Sequences/s since the previous call (or the start)."""
        now = time.perf_counter()
        self._window_rate = self.per_update * self._window_steps / max(now - self._window_start, 1e-9)
        self._window_start, self._window_steps = now, 0
        return self._window_rate

    def eta(self, step: int) -> str:
        if not self._timed_steps:
            return ""
        per_step = (time.perf_counter() - self._timed_start) / self._timed_steps
        return f"  ETA {datetime.timedelta(seconds=int(per_step * (self.last_step - step)))}"

    def overall(self) -> float:
        """Sequences/s over the timed steps (the last window's rate if there are none)."""
        if not self._timed_steps:
            return self._window_rate
        return self.per_update * self._timed_steps / (time.perf_counter() - self._timed_start)
