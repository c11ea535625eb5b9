"""The one training loop that pretraining and fine-tuning share.

    set_precision("fp16")                           # before building the model
    model = ...                                     # any Keras 3 model, called as model(features, training=)
    trainer = Trainer(model, loss_fn, optimizer, TrainLoopConfig(output_dir=..., num_train_steps=...))
    result = trainer.train(dataset)                 # resumes from output_dir if it holds a checkpoint
    metrics = trainer.evaluate(eval_dataset, max_steps=100)

`loss_fn(outputs, features) -> (loss, metrics)`: `loss` a scalar, `metrics` a dict of scalars
(averaged over batches) or of `(total, count)` pairs (summed, then divided: exact weighted means).

One update of the weights ("a step") is:
  for each of num_accumulation_steps micro-batches:       [jit_compile=True under --xla]
      forward, loss (x loss scale under fp16), backward; add the gradients to the accumulators
  one allreduce of the accumulated gradients over ranks (Horovod; fp16 on the wire if asked)
  global-norm clipping (at clip_norm, or clip_norm x loss scale on still-scaled fp16 gradients)
  optimizer update (LossScaleOptimizer under fp16: skipped and the scale halved on overflow)
With one micro-batch per update all of it is one tf.function (no accumulators); with several, the
micro-batches run in one function and the allreduce + clip + update in another.

Checkpoints (only rank 0 writes, except each rank's input-pipeline position):
  output_dir/ckpt-<step>/      complete checkpoints; the last keep_checkpoints are kept
      model.ckpt-<step>.*      the weights (Google's names when the caller passes them as weights_io)
      state.*                  step, optimizer slots and loss scale, RNG states (tf.train.Checkpoint)
      data-rank<r>.*           rank r's tf.data iterator, so a resumed run reads what it would have
      COMPLETE.json
  output_dir/checkpoint        TF's pointer to the latest model.ckpt (tf.train.latest_checkpoint works)
A checkpoint is written under .ckpt-<step>.tmp and renamed into place only when complete, so a kill
during a save leaves the previous checkpoint as the latest one.

A gs:// output_dir: the loop above runs in a node-local work directory (config.work_dir, default
bert_core.staging.local_dir_for(output_dir, "work")), and each checkpoint is then published to
output_dir/ckpt-<step>/ with storage.atomic_dir's guarantees: every other rank uploads its own
data-rank<r> files first (ranks on other hosts share no disk with the chief), then the chief uploads
the rest and the `_COMPLETE` marker last, rewrites output_dir/checkpoint and prunes. On start the
newest gs:// checkpoint with a marker is downloaded into the work directory (once per host) and
resumed from; summaries (train/) are uploaded at every checkpoint and at the end.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import glob
import math
import os
import re
import shutil
import time
from typing import Any, Callable, Literal, Mapping, Protocol

import keras
import tensorflow as tf

from bert_core import distributed, kernels, optimization, staging, storage
from bert_core.errors import UserError

Precision = Literal["fp32", "fp16", "bf16"]
LossFn = Callable[[Any, Mapping[str, tf.Tensor]], "tuple[tf.Tensor, dict[str, Any]]"]

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


_CKPT_RE = re.compile(r"^ckpt-(\d+)$")


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in output_dir as (step, directory), oldest first (gs://: with a marker)."""
    found = []
    if storage.is_remote(output_dir):
        for marker in storage.glob(storage.join(output_dir, "ckpt-*", storage.COMPLETE_MARKER)):
            d = storage.dirname(marker)
            m = _CKPT_RE.match(storage.basename(d))
            if m:
                found.append((int(m.group(1)), d))
        return sorted(found)
    for d in glob.glob(os.path.join(output_dir, "ckpt-*")):
        m = _CKPT_RE.match(os.path.basename(d))
        if m and os.path.exists(os.path.join(d, "COMPLETE.json")):
            found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(output_dir: str) -> tuple[int, str] | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def _rank_of(name: str) -> int | None:
    """r for a rank's input-position file `data-rank<r>.*`, else None."""
    m = re.match(r"^data-rank(\d+)\.", name)
    return int(m.group(1)) if m else None


def _download_checkpoint(remote: str, local: str) -> None:
    """Make the local directory hold the gs:// checkpoint its marker lists; reuse files already there
    when the local COMPLETE.json is the remote one; COMPLETE.json last (it makes `local` count)."""
    files = {f["path"]: f["size"] for f in storage.read_json(storage.join(remote, storage.COMPLETE_MARKER))["files"]}
    done = os.path.join(local, "COMPLETE.json")
    same = os.path.exists(done) and storage.read_bytes(done) == storage.read_bytes(storage.join(remote, "COMPLETE.json"))
    if not same:
        shutil.rmtree(local, ignore_errors=True)
    for rel, size in files.items():
        path = os.path.join(local, *rel.split("/"))
        if rel != "COMPLETE.json" and not (os.path.exists(path) and os.path.getsize(path) == size):
            storage.copy(storage.join(remote, rel), path)
    if not same:
        storage.copy(storage.join(remote, "COMPLETE.json"), done)


def _fsync_tree(path: str) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _as_metric(v) -> tuple[tf.Tensor, tf.Tensor]:
    """A metric value as (total, count): a (total, count) pair as given, a scalar as (value, 1)."""
    if isinstance(v, (tuple, list)):
        return tf.cast(v[0], tf.float32), tf.cast(v[1], tf.float32)
    return tf.cast(v, tf.float32), tf.constant(1.0)


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
                 weights_io: WeightsIO | None = None, weights_name: str = "model.ckpt",
                 callbacks: list[Callable[["Trainer", int, dict], None]] | None = None,
                 log: Callable[[str], None] | None = None):
        self.model = model
        self.loss_fn = loss_fn
        self.config = config
        self.optimizer = wrap_optimizer(optimizer, config.dtype)
        self.dist = dist or distributed.current()
        self.weights_io = weights_io or KerasWeightsIO()
        self.weights_name = weights_name
        self.callbacks = list(callbacks or [])
        self._log = log or (lambda line: print(line, flush=True))
        # A gs:// output_dir: checkpoints and summaries are made in a local work dir, then published.
        self.remote = storage.is_remote(config.output_dir)
        self.work_dir = (config.work_dir or staging.local_dir_for(config.output_dir, "work")) if self.remote \
            else config.output_dir
        self._uploaded: dict[str, int] = {}  # summary file -> size last uploaded
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.fp16 = isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer)
        self._built = False
        self._accumulators: list[tf.Variable] = []
        self._summary_writer = None
        self._step_fn = None  # forward..update in one graph (one micro-batch per update)
        self._micro_fn = None
        self._apply_fn = None
        self._eval_fn = None

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

        # The fused CPU kernels (bert_core.kernels) where they apply; custom ops have no XLA lowering.
        fused = contextlib.nullcontext if cfg.xla else kernels.training_step
        if cfg.xla and (line := prefer_legacy_xla_cpu_runtime()):
            self.log(line)

        def forward_backward(features):
            with fused(), tf.GradientTape() as tape:
                outputs = model(features, training=True)
                loss, metrics = loss_fn(outputs, features)
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
            with fused(), clipping:
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

    # ------------------------------------------------------------------ checkpoints
    def _state_checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(
            step=self.global_step,
            optimizer=_keyed(self.optimizer.variables),
            model_state=_keyed(self.model.non_trainable_variables))  # RNG seeds for dropout, etc.

    def save_checkpoint(self, iterator=None) -> str | None:
        """Write ckpt-<step> atomically (chief), each rank's iterator state into it; prune old ones."""
        cfg, dist = self.config, self.dist
        step = int(self.global_step.numpy())
        final = os.path.join(self.work_dir, f"ckpt-{step}")
        tmp = os.path.join(self.work_dir, f".ckpt-{step}.tmp")
        remote = storage.join(cfg.output_dir, f"ckpt-{step}") if self.remote else None
        if dist.is_chief:
            if os.path.exists(tmp):
                shutil.rmtree(tmp)
            os.makedirs(tmp)
            if remote:  # an earlier version of this step reads as incomplete before any rank uploads
                storage.remove(storage.join(remote, storage.COMPLETE_MARKER))
        dist.barrier()
        if iterator is not None:
            if remote and not dist.is_chief:
                self._upload_input_position(iterator, step, remote)
            else:
                tf.train.Checkpoint(iterator=iterator).write(os.path.join(tmp, f"data-rank{dist.rank}"))
        dist.barrier()
        if dist.is_chief:
            self.weights_io.save(self.model, os.path.join(tmp, f"{self.weights_name}-{step}"))
            self._state_checkpoint().write(os.path.join(tmp, "state"))
            storage.write_json(os.path.join(tmp, "COMPLETE.json"),
                               {"global_step": step, "world_size": dist.size,
                                "weights": f"{self.weights_name}-{step}",
                                "time": datetime.datetime.now(datetime.timezone.utc).isoformat()})
            _fsync_tree(tmp)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
            pointer = (f'model_checkpoint_path: "ckpt-{step}/{self.weights_name}-{step}"\n'
                       f'all_model_checkpoint_paths: "ckpt-{step}/{self.weights_name}-{step}"\n')
            storage.write_text(os.path.join(self.work_dir, "checkpoint"), pointer)
            for _, old in list_checkpoints(self.work_dir)[:-cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            if remote:
                self._publish(final, remote, pointer)
        dist.barrier()
        if not dist.is_chief:
            return None
        return remote or final

    # ------------------------------------------------------------------ gs:// output_dir
    def _upload_input_position(self, iterator, step: int, remote: str) -> None:
        """A non-chief rank's data-rank<r> files, straight to the gs:// checkpoint (another host's
        rank shares no disk with the chief), through a private local directory."""
        own = os.path.join(self.work_dir, f".ckpt-{step}.rank{self.dist.rank}.tmp")
        shutil.rmtree(own, ignore_errors=True)
        try:
            tf.train.Checkpoint(iterator=iterator).write(os.path.join(own, f"data-rank{self.dist.rank}"))
            for name in sorted(os.listdir(own)):
                storage.copy(os.path.join(own, name), storage.join(remote, name))
        finally:
            shutil.rmtree(own, ignore_errors=True)

    def _publish(self, local: str, remote: str, pointer: str) -> None:
        """Chief: the local checkpoint -> gs:// (marker last), then the pointer, pruning, summaries."""
        cfg = self.config
        storage.publish_dir(local, remote, others=lambda rel: _rank_of(rel) not in (None, 0))
        storage.write_text(storage.join(cfg.output_dir, "checkpoint"), pointer)
        for _, old in list_checkpoints(cfg.output_dir)[:-cfg.keep_checkpoints]:
            storage.remove_dir(old)
        self._upload_summaries()

    def _upload_summaries(self) -> None:
        local = os.path.join(self.work_dir, "train")
        if not (self.remote and self.dist.is_chief and os.path.isdir(local)):
            return
        if self._summary_writer is not None:
            self._summary_writer.flush()
        for info in storage.list_files(local):
            if self._uploaded.get(info.path) != info.size:
                rel = os.path.relpath(info.path, local).replace(os.sep, "/")
                storage.copy(info.path, storage.join(self.config.output_dir, "train", rel))
                self._uploaded[info.path] = info.size

    def sync_checkpoints(self) -> tuple[int, str] | None:
        """The latest checkpoint as a local (step, directory), or None.

        gs:// output_dir: the chief deletes checkpoints a killed run left without a marker; then on
        every host (its local rank 0) the work dir is made to hold exactly the newest complete gs://
        checkpoint: other local ones are removed (gs:// is the record), missing or stale files are
        downloaded, COMPLETE.json last. Every rank must call this."""
        cfg, dist = self.config, self.dist
        if not self.remote:
            return latest_checkpoint(self.work_dir)
        if dist.is_chief:
            for d in storage.glob(storage.join(cfg.output_dir, "ckpt-*")):
                if _CKPT_RE.match(storage.basename(d)) and not storage.is_complete(d):
                    storage.remove_dir(d)
                    self.log(f"removed {d}: an incomplete checkpoint (no {storage.COMPLETE_MARKER})")
        dist.barrier()
        remote = latest_checkpoint(cfg.output_dir)
        if dist.local_rank == 0:
            keep = f"ckpt-{remote[0]}" if remote else None
            for d in glob.glob(os.path.join(self.work_dir, "ckpt-*")):
                if os.path.basename(d) != keep:
                    shutil.rmtree(d, ignore_errors=True)
            if remote:
                _download_checkpoint(remote[1], os.path.join(self.work_dir, keep))
        dist.barrier()
        return latest_checkpoint(self.work_dir)

    def _clean_partial_saves(self) -> None:
        if self.dist.is_chief or (self.remote and self.dist.local_rank == 0):
            for d in glob.glob(os.path.join(self.work_dir, ".ckpt-*.tmp")):
                shutil.rmtree(d, ignore_errors=True)
            storage.remove_stale_temporaries(self.work_dir)
        self.dist.barrier()

    def restore_checkpoint(self, directory: str, iterator=None) -> int:
        """Load weights, training state and (if saved for this rank) the iterator from a ckpt dir."""
        info = storage.read_json(os.path.join(directory, "COMPLETE.json"))
        self.weights_io.restore(self.model, os.path.join(directory, info["weights"]))
        self._state_checkpoint().read(os.path.join(directory, "state")).assert_existing_objects_matched()
        if iterator is not None:
            data_prefix = os.path.join(directory, f"data-rank{self.dist.rank}")
            if os.path.exists(data_prefix + ".index"):
                tf.train.Checkpoint(iterator=iterator).read(data_prefix).assert_existing_objects_matched()
            else:
                self.log(f"{directory}: no input position saved for rank {self.dist.rank} "
                         f"(saved with {info.get('world_size')} ranks); this rank's data starts afresh")
        return int(self.global_step.numpy())

    # ------------------------------------------------------------------ training
    def _summary(self, values: Mapping[str, float], step: int) -> None:
        if not (self.config.summaries and self.dist.is_chief):
            return
        if self._summary_writer is None:
            self._summary_writer = tf.summary.create_file_writer(os.path.join(self.work_dir, "train"))
        with self._summary_writer.as_default(step=step):
            for k, v in values.items():
                tf.summary.scalar(k, v)
        self._summary_writer.flush()

    def current_learning_rate(self) -> float:
        lr = self.optimizer.learning_rate
        return float(lr.numpy() if hasattr(lr, "numpy") else lr)

    def loss_scale(self) -> float | None:
        return float(self.optimizer.dynamic_scale.numpy()) if self.fp16 else None

    def train(self, dataset: tf.data.Dataset) -> TrainResult:
        cfg, dist = self.config, self.dist
        if dist.is_chief or (self.remote and dist.local_rank == 0):
            os.makedirs(self.work_dir, exist_ok=True)
        self._clean_partial_saves()
        iterator = iter(dataset)
        latest = self.sync_checkpoints()

        if latest is not None:
            # The iterator's position comes first, so the batch used to build the model is the next one.
            data_prefix = os.path.join(latest[1], f"data-rank{dist.rank}")
            if os.path.exists(data_prefix + ".index"):
                tf.train.Checkpoint(iterator=iterator).read(data_prefix).assert_existing_objects_matched()
        first = self._next(iterator)
        self._build(first)
        resumed_from = None
        if latest is not None:
            resumed_from = self.restore_checkpoint(latest[1])
            source = storage.join(cfg.output_dir, os.path.basename(latest[1])) if self.remote else latest[1]
            self.log(f"resumed from {source} at step {resumed_from}")
        # Every rank starts from rank 0's weights, optimizer slots, loss scale and step. (All state
        # exists before the first step here, so one broadcast covers it; Horovod's usual "after the
        # first step" is only for optimizers that create their slots lazily.)
        if dist.size > 1:
            dist.broadcast_variables(self.model.variables + self.optimizer.variables + [self.global_step])

        start_step = int(self.global_step.numpy())
        per_update = int(first_batch_size(first)) * cfg.num_accumulation_steps * dist.size
        self.log(f"training: steps {start_step}->{cfg.num_train_steps}, {dist.size} rank(s), "
                 f"{per_update} sequences per update ({first_batch_size(first)} x {cfg.num_accumulation_steps} "
                 f"micro-batches x {dist.size} ranks), dtype {cfg.dtype}, xla {cfg.xla}")

        history: collections.deque = collections.deque(maxlen=cfg.history_limit)
        last_loss, last_metrics = float("nan"), {}
        t_window, steps_window = time.perf_counter(), 0
        t_start_timed, steps_timed = None, 0
        sps = 0.0
        pending = first
        while int(self.global_step.numpy()) < cfg.num_train_steps:
            losses, mtotals = [], {}
            for _ in range(cfg.num_accumulation_steps):
                batch = pending if pending is not None else self._next(iterator)
                pending = None
                if self._step_fn is not None:
                    loss, metrics, grad_norm = self._step_fn(batch)
                else:
                    loss, metrics, grads = self._micro_fn(batch)
                losses.append(loss)
                for k, v in metrics.items():
                    t, c = _as_metric(v)
                    mt = mtotals.setdefault(k, [0.0, 0.0])
                    mt[0] += t
                    mt[1] += c
            if self._step_fn is None:
                grad_norm = self._apply_fn(grads)
            step = int(self.global_step.numpy())
            loss_value = float(tf.add_n(losses).numpy()) / len(losses)
            if cfg.stop_on_nonfinite_loss and not self.fp16 and not math.isfinite(loss_value):
                raise UserError(f"the training loss became {loss_value} at step {step} (dtype {cfg.dtype}); "
                                f"lower --learning_rate or raise --num_warmup_steps")
            last_loss = loss_value
            last_metrics = {k: float(t / c) if c else float("nan") for k, (t, c) in mtotals.items()}
            steps_window += 1
            if step == start_step + 1:  # the first step includes tracing/compilation: time from here
                t_start_timed, steps_timed = time.perf_counter(), 0
            else:
                steps_timed += 1

            row = {"step": step, "loss": last_loss, **last_metrics}
            if step % cfg.log_every_steps == 0 or step == cfg.num_train_steps or step == start_step + 1:
                if dist.size > 1:  # log the mean over ranks, not rank 0's share
                    last_loss, last_metrics = self._mean_over_ranks(loss_value, mtotals)
                    row.update({"loss": last_loss, **last_metrics})
                now = time.perf_counter()
                sps = per_update * steps_window / max(now - t_window, 1e-9)
                t_window, steps_window = now, 0
                lr = self.current_learning_rate()
                eta = ""
                if t_start_timed is not None and steps_timed > 0:
                    per_step = (now - t_start_timed) / steps_timed
                    eta = f"  ETA {datetime.timedelta(seconds=int(per_step * (cfg.num_train_steps - step)))}"
                scale = self.loss_scale()
                self.log(f"step {step}/{cfg.num_train_steps}  loss {last_loss:.4f}  lr {lr:.3e}  "
                         f"{sps:.1f} seq/s{eta}" + (f"  loss_scale {scale:g}" if scale is not None else ""))
                summ = {"loss": last_loss, "learning_rate": lr, "sequences_per_second": sps,
                        "grad_norm": float(grad_norm.numpy()), **last_metrics}
                if scale is not None:
                    summ["loss_scale"] = scale
                self._summary(summ, step)
                row.update({"learning_rate": lr, "sequences_per_second": sps})
            history.append(row)
            if step % cfg.save_checkpoints_steps == 0 or step == cfg.num_train_steps:
                path = self.save_checkpoint(iterator)
                if path:
                    self.log(f"saved {path}")
            for cb in self.callbacks:
                cb(self, step, row)

        if t_start_timed is not None and steps_timed > 0:
            sps = per_update * steps_timed / (time.perf_counter() - t_start_timed)
        self._upload_summaries()
        return TrainResult(global_step=int(self.global_step.numpy()), loss=last_loss, metrics=last_metrics,
                           sequences_per_second=sps, resumed_from=resumed_from, history=list(history))

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

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, dataset: tf.data.Dataset, max_steps: int | None = None,
                 output_json: str | None = None) -> dict[str, float]:
        """Mean loss and metrics over up to max_steps batches on every rank, combined over ranks.

        Returns {"global_step", "loss", <metrics>}; the chief writes it as JSON if output_json is given."""
        if self._eval_fn is None:
            model, loss_fn = self.model, self.loss_fn

            def eval_step(features):
                outputs = model(features, training=False)
                loss, metrics = loss_fn(outputs, features)
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

