"""`bert smoke-test`: does BERT train on the accelerators here, and how fast? The question the ROCm
fork's scripts/run_model_in_rocm_docker.sh answers in its docker image, in one command:

    bert smoke-test                                   # bert-large, seq 128, batch 8, fp16 on each GPU
    bert smoke-test --model=bert-base --max_seq_length=512 --train_batch_size=4
    horovodrun -np 8 -H localhost:8 bert smoke-test   # one rank a GPU, and the ranks must agree

It prints, one fact a line:

    build: TensorFlow 2.18.0, ROCm build (ROCm 6.2)
    device: GPU:0 AMD Instinct MI250X, 63.0 GiB
    result: GPU:0 bert-large seq 128 batch 8 fp16: 102.4 sequences/s, peak memory 14.2 GiB, 20 steps, loss 10.95
    ranks agree: yes (8 ranks: loss 10.9312 and weights checksum 1.6357e+07 on every rank)

Each device runs `--num_train_steps` updates of the real pretraining step (bert_core.training's
Trainer, the model, Google's loss and the optimizer of `bert pretrain`) on random token ids in the
records' layout, writing no checkpoint. Sequences/s leave out the first step (tracing and
compilation), as `bert pretrain`'s do. One process tries every GPU it sees in turn; under
horovodrun/mpirun each rank uses its own GPU (bert_core.distributed), trains on different data,
and then every rank scores the same batch: the loss and a checksum of the weights must be the same
on every rank (they are when the allreduce gives every rank the same gradients), else the command
says which rank differs and exits 1. Without a GPU it says so in one line and trains a small model
(bert-tiny unless --model says) on the CPU.

Defaults are the fork's script's: bert_large, SEQ=128, BATCH=8, max predictions ceil(0.15 x SEQ),
--auto_mixed_precision=True (fp16, on a GPU), learning rate 2e-5.
"""

from __future__ import annotations

import math
import os
import resource
import tempfile

from bert_core.config import SmokeTestConfig
from bert_core.errors import UserError

#: Test hook: the rank named here perturbs its weights after training, so the agreement check must fail.
SKEW_RANK_ENV = "BERT_SMOKE_TEST_SKEW_RANK"
GIB = 1 << 30


def build_line() -> str:
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    if info.get("is_rocm_build"):
        version = info.get("rocm_version")
        kind = "ROCm build" + (f" (ROCm {version})" if version else "")
    elif info.get("is_cuda_build"):
        kind = f"CUDA build (CUDA {info.get('cuda_version', '?')}, cuDNN {info.get('cudnn_version', '?')})"
    else:
        kind = "CPU-only build (no ROCm or CUDA support)"
    return f"build: TensorFlow {tf.__version__}, {kind}"


def no_gpu_reason() -> str:
    """Why this process sees no GPU, as far as it can tell."""
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    if info.get("is_rocm_build"):
        return ("this ROCm build of TensorFlow finds no GPU (a container needs --device=/dev/kfd "
                "--device=/dev/dri --group-add video; HIP_VISIBLE_DEVICES may hide them)")
    if info.get("is_cuda_build"):
        return "this CUDA build of TensorFlow finds no GPU (CUDA_VISIBLE_DEVICES may hide them)"
    return "this TensorFlow is a CPU-only build"


def device_lines() -> list[tuple[str, str]]:
    """[(device, `device: ...` line)] for the GPUs this process sees (or the CPU), with their names
    and the memory TensorFlow can use on them."""
    import tensorflow as tf
    from tensorflow.python.client import device_lib

    limits = {d.name.replace("/device:", ""): d.memory_limit for d in device_lib.list_local_devices()}
    out = []
    # The visible GPUs (a rank's one after pinning), in the order TensorFlow numbers them GPU:0, GPU:1, ...
    for index, physical in enumerate(tf.config.get_visible_devices("GPU")):
        name = f"GPU:{index}"
        details = tf.config.experimental.get_device_details(physical)
        label = details.get("device_name", "unknown GPU")
        if "compute_capability" in details:
            label += f" (compute capability {'.'.join(map(str, details['compute_capability']))})"
        memory = limits.get(name)
        out.append((name, f"device: {name} {label}" + (f", {memory / GIB:.1f} GiB" if memory else "")))
    if not out:
        cores = os.cpu_count() or 1
        out.append(("CPU:0", f"device: CPU:0 ({cores} cores)"))
    return out


def _features(batch: int, seq: int, predictions: int, vocab_size: int, seed: int) -> dict:
    """A batch in the pretraining records' layout (bert_core.layout.PRETRAINING_RECORD), random ids."""
    import numpy as np

    rng = np.random.default_rng(seed)
    half = seq // 2
    positions = np.sort(np.stack([rng.choice(np.arange(1, seq), predictions, replace=False)
                                  for _ in range(batch)]), axis=1)
    return {
        "input_ids": rng.integers(5, vocab_size, (batch, seq)).astype(np.int32),
        "input_mask": np.ones((batch, seq), np.int32),
        "segment_ids": np.concatenate([np.zeros((batch, half)), np.ones((batch, seq - half))], 1).astype(np.int32),
        "masked_lm_positions": positions.astype(np.int32),
        "masked_lm_ids": rng.integers(5, vocab_size, (batch, predictions)).astype(np.int32),
        "masked_lm_weights": np.ones((batch, predictions), np.float32),
        "next_sentence_labels": rng.integers(0, 2, (batch, 1)).astype(np.int32),
    }


def _peak_memory(device: str) -> str:
    import tensorflow as tf

    if device.startswith("GPU"):
        try:
            return f"peak memory {tf.config.experimental.get_memory_info(device)['peak'] / GIB:.2f} GiB"
        except (ValueError, RuntimeError):
            return "peak memory unknown"
    # ru_maxrss is KiB on Linux: the process's peak resident memory (the CPU has no device counter)
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20):.2f} GiB"


def train_on(device: str, cfg: SmokeTestConfig, model_name: str, dtype: str, dist) -> tuple[str, object]:
    """`--num_train_steps` pretraining updates on `device`; the `result:` line and the model."""
    import keras
    import tensorflow as tf

    from bert_core import training
    from bert_core.modeling import BertPretrainer
    from bert_core.optimization import create_optimizer
    from bert_core.pretrain import pretraining_loss_fn
    from bert_core.presets import preset_config

    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.random_seed)
    training.set_precision(dtype)
    bert_config = preset_config(model_name)
    if cfg.max_seq_length > bert_config.max_position_embeddings:
        raise UserError(f"--max_seq_length={cfg.max_seq_length} exceeds {model_name}'s max_position_embeddings="
                        f"{bert_config.max_position_embeddings}")
    predictions = cfg.max_predictions_per_seq or math.ceil(0.15 * cfg.max_seq_length)
    if device.startswith("GPU"):
        tf.config.experimental.reset_memory_stats(device)
    with tf.device(device), tempfile.TemporaryDirectory(prefix="bert-smoke-test-") as out:
        batch = _features(cfg.train_batch_size, cfg.max_seq_length, predictions, bert_config.vocab_size,
                          cfg.random_seed + dist.rank)
        data = tf.data.Dataset.from_tensors(batch).repeat()
        model = BertPretrainer(bert_config)
        model.build()
        optimizer = create_optimizer(cfg.optimizer_type, cfg.learning_rate, cfg.num_train_steps, 0)
        loop = training.TrainLoopConfig(output_dir=out, num_train_steps=cfg.num_train_steps, dtype=dtype,
                                        xla=cfg.xla, log_every_steps=cfg.num_train_steps, summaries=False,
                                        checkpoints=False)
        trainer = training.Trainer(model, pretraining_loss_fn, optimizer, loop, dist=dist, log=lambda line: None)
        result = trainer.train(data)
    per_rank = result.sequences_per_second / dist.size
    where = f"rank {dist.rank} {device}" if dist.size > 1 else device
    line = (f"result: {where} {model_name} seq {cfg.max_seq_length} batch {cfg.train_batch_size} {dtype}: "
            f"{per_rank:.1f} sequences/s, {_peak_memory(device)}, {result.global_step} steps, "
            f"loss {result.loss:.4f}")
    if not math.isfinite(result.loss):
        raise UserError(f"{line}: the loss is not finite")
    return line, (model, bert_config, predictions)


def ranks_agree(model, bert_config, predictions: int, cfg: SmokeTestConfig, dist) -> tuple[bool, str]:
    """Score one common batch on every rank and compare the loss and the weights' checksum over ranks."""
    import numpy as np
    import tensorflow as tf

    from bert_core.ops import PLAIN
    from bert_core.pretrain import pretraining_loss_fn

    if os.environ.get(SKEW_RANK_ENV) == str(dist.rank):
        var = model.trainable_variables[0]
        var.assign_add(tf.fill(var.shape, tf.constant(1e-3, var.dtype)))
    batch = {k: tf.constant(v) for k, v in _features(cfg.train_batch_size, cfg.max_seq_length, predictions,
                                                       bert_config.vocab_size, seed=0).items()}
    loss, _ = pretraining_loss_fn(model(batch, training=False), batch, PLAIN)
    checksum = sum(float(tf.reduce_sum(tf.abs(tf.cast(v, tf.float64)))) for v in model.trainable_variables)
    mine = np.zeros(2 * dist.size)
    mine[2 * dist.rank:2 * dist.rank + 2] = [float(loss), checksum]
    (gathered,) = dist.allreduce_sum([tf.constant(mine, tf.float64)])  # an allgather: each rank fills its slot
    values = np.asarray(gathered).reshape(dist.size, 2)
    spread = np.abs(values - values[0]) / np.maximum(np.abs(values[0]), 1e-12)
    if (spread <= cfg.agreement_tolerance).all():
        return True, (f"ranks agree: yes ({dist.size} ranks: loss {values[0, 0]:.4f} and weights checksum "
                      f"{values[0, 1]:.6e} on every rank)")
    bad = [r for r in range(dist.size) if (spread[r] > cfg.agreement_tolerance).any()]
    return False, ("ranks agree: NO (" + "; ".join(f"rank {r}: loss {values[r, 0]:.6f} checksum {values[r, 1]:.9e}"
                                                   for r in [0, *bad]) +
                   f": more than {cfg.agreement_tolerance:g} relative apart)")


def smoke_test_main(cfg: SmokeTestConfig) -> int:
    import tensorflow as tf

    from bert_core import distributed

    def say(line: str) -> None:
        print(line, flush=True)

    under_launcher = distributed.launcher_world_size() > 1
    if under_launcher:
        dist = distributed.initialize()  # one GPU a rank (pinned), Horovod's collectives
    else:
        dist = distributed.Distributed()  # one process: it tries every GPU in turn
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    chief = dist.is_chief
    devices = device_lines()
    if chief:
        say(build_line())
    if chief or under_launcher:
        for _, line in devices:
            say(f"rank {dist.rank} {line}" if under_launcher else line)
    on_gpu = devices[0][0].startswith("GPU")
    model_name = cfg.model or ("bert-large" if on_gpu else "bert-tiny")
    dtype = cfg.dtype or ("fp16" if on_gpu else "fp32")
    if not on_gpu and chief:
        say(f"no GPU: {no_gpu_reason()}; training {model_name} on the CPU")
    last = None
    for device, _ in devices:
        line, last = train_on(device, cfg, model_name, dtype, dist)
        say(line)
    if dist.size > 1:
        ok, line = ranks_agree(*last, cfg, dist)
        if chief:
            say(line)
        return 0 if ok else 1
    return 0
