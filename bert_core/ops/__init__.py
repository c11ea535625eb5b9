"""The seam between the model and the hardware: the few ops whose fastest form depends on the device.

modeling.py, the losses and optimization.py do their math through one `Ops` object, passed to them
explicitly (`model(features, training=True, ops=ops)`, `pretraining_loss(outputs, features, ops)`,
`optimizer.ops`); none of them imports a kernel or asks which device it runs on. The ops:

    dense(x, kernel, bias, activation)          x [rows, in] -> [rows, out]
    dropout(x, rate, seed_generator)            inverted dropout
    attention_probs(scores, rate, seed, dtype)  dropout(softmax(scores)) over the last axis
    layer_norm(x, gamma, beta, epsilon)         over the last axis, float32
    gelu(x), activation(name)                   the config's hidden_act
    cross_entropy_with_argmax(logits, labels)   -log softmax[label] and the prediction, per row
    apply_adamw(variable, m, v, gradient, ...)  Google's AdamWeightDecay update, in place

Backends:
    PLAIN      textbook TensorFlow/Keras (ops/plain.py). The GPU, XLA, evaluation, export and
               reference path; the default wherever no one chose otherwise.
    cpu_fused  PLAIN plus the fused C++ CPU kernels and CPU-tuned gradients (ops/cpu_fused.py).

`for_training(xla=...)` is the one decision, made once per Trainer (bert_core.training) when it
builds its training step; the Trainer logs the line it returns.
"""

from __future__ import annotations

import os

import tensorflow as tf

from bert_core.ops.plain import PlainOps

Ops = PlainOps  # the interface: every backend is a PlainOps that overrides what it does faster
PLAIN = PlainOps()

_cpu_fused: Ops | None = None


def _fused_kernels_disabled() -> bool:
    return os.environ.get("BERT_FUSED_KERNELS", "1").strip().lower() in ("0", "false", "no", "off")


def for_training(*, xla: bool) -> tuple[Ops, str]:
    """The ops a training step should use on this machine, and the line that says why:

        cpu_fused   no GPU visible, not --xla, BERT_FUSED_KERNELS not 0, and the kernels built
        plain       otherwise (the reason in the line)
    """
    global _cpu_fused
    if _fused_kernels_disabled():
        return PLAIN, "ops: plain (BERT_FUSED_KERNELS=0)"
    if tf.config.list_physical_devices("GPU"):
        return PLAIN, "ops: plain (a GPU is visible)"
    if xla:
        return PLAIN, "ops: plain (--xla: the fused CPU kernels have no XLA lowering)"
    if _cpu_fused is None:
        from bert_core import kernels

        if kernels.library() is None:
            return PLAIN, f"ops: plain (fused CPU kernels unavailable: {kernels.build_error()})"
        from bert_core.ops.cpu_fused import CpuFusedOps

        _cpu_fused = CpuFusedOps()
    return _cpu_fused, "ops: cpu_fused (BERT_FUSED_KERNELS=0 for plain)"
