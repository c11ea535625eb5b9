"""`cpu_fused`: the plain ops with the fused C++ CPU kernels (bert_core.kernels) and the CPU-tuned
gradients where they apply, for a training step on a CPU with no GPU, not under XLA.

Each method takes the fused path for float32 tensors (the kernels are float32) and falls back to
`plain` otherwise, so a mixed-precision step on CPU still fuses LayerNorm, the cross-entropy and
the optimizer, which run in float32 under every policy. Same math as plain, to rounding: the tests
hold every op, and a whole training step, to plain's values and gradients. Measured effects are in
docs/benchmarks.md (`make bench-train` has a row for each backend).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from bert_core import kernels
from bert_core.ops.plain import PlainOps


def _float32(*tensors) -> bool:
    return all(tf.as_dtype(t.dtype) == tf.float32 for t in tensors)


class CpuFusedOps(PlainOps):
    name = "cpu_fused"

    def gelu(self, x):
        return kernels.gelu(x) if _float32(x) else super().gelu(x)

    def dense(self, x, kernel, bias, activation=None, transpose_kernel=False):
        # With exact GELU: the bias and GELU are one kernel whose backward also gives the bias
        # gradient. Without an activation: `kernels.dense`, whose weight gradient is a
        # batch-of-one matmul (oneDNN's matmul primitive; faster than MatMul with transpose_a).
        if _float32(x) and x.shape.rank == 2:
            if activation == "gelu" and not transpose_kernel:
                return kernels.bias_gelu(tf.matmul(x, kernel), bias)
            if activation in (None, "linear"):
                return kernels.dense(x, kernel, bias, transpose_kernel=transpose_kernel)
        return super().dense(x, kernel, bias, activation, transpose_kernel)

    def dropout(self, x, rate, seed):
        # 16 random bits an element from the layer's seed generator (Philox, see docs/training.md).
        return kernels.dropout(x, rate, seed.next()) if _float32(x) else super().dropout(x, rate, seed)

    def attention_probs(self, scores, rate, seed, dtype):
        # TF's softmax and the dropout kernel forward; the backward of both in one fused pass.
        if tf.as_dtype(dtype) != tf.float32:
            return super().attention_probs(scores, rate, seed, dtype)
        return kernels.softmax_dropout(scores, rate, None if seed is None or not rate else seed.next())

    def layer_norm(self, x, gamma, beta, epsilon):
        return kernels.layer_norm(x, gamma, beta, epsilon) if _float32(x) else super().layer_norm(x, gamma, beta, epsilon)

    def cross_entropy_with_argmax(self, logits, labels):
        # One read of each [N, V] row for the loss and the argmax (TF's ArgMax over the masked-LM's
        # [640, 30522] logits alone is a single-threaded ~10 ms on 2 cores).
        if _float32(logits):
            return kernels.sparse_cross_entropy(logits, labels)
        return super().cross_entropy_with_argmax(logits, labels)

    def apply_adamw(self, variable, m, v, gradient, *, learning_rate, weight_decay, beta_1, beta_2, epsilon,
                    gradient_scale=None):
        """Google's AdamW in one pass (BertApplyAdamW): the gradient scale, the decoupled decay and
        the Adam update per element, instead of ~10 elementwise ops.

        The kernel does ResourceApplyAdam's update with beta powers 0 (no bias correction):
        m_k += (g - m_k) c1, v_k += (g^2 - v_k) c2, w -= lr' m_k / (sqrt(v_k) + eps'), with
        c = 1 - float32(b) formed in float32. Google's rule in float32 decays by float32(b) = 1 - c
        as well but adds a g (a = float32(1 - b), from Python doubles; c2 = 0.00099998713 vs
        a2 = 0.001), so its moments are the kernel's times a / c exactly: m = (a1 / c1) m_k,
        v = (a2 / c2) v_k. Hence lr' = lr (a1 / c1) / k, eps' = eps / k with k = sqrt(a2 / c2) give
        Google's update to rounding. So the m and v slots hold m_k, v_k: within 1.3e-5 (relative)
        of plain's, which a run resumed on the other backend does not notice."""
        from bert_core.distributed import _tf_variable

        w, m_var, v_var = (_tf_variable(x) for x in (variable, m, v))
        if not (_float32(w, m_var, v_var) and all(hasattr(x, "handle") for x in (w, m_var, v_var))):
            return super().apply_adamw(variable, m, v, gradient, learning_rate=learning_rate,
                                       weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                                       gradient_scale=gradient_scale)
        c1, c2 = (1.0 - float(np.float32(b)) for b in (beta_1, beta_2))  # exact in float32
        a1, a2 = (float(np.float32(1.0 - b)) for b in (beta_1, beta_2))
        k = math.sqrt(a2 / c2)
        lr = tf.cast(learning_rate, tf.float32)
        scale = tf.constant(1.0) if gradient_scale is None else tf.cast(gradient_scale, tf.float32)
        decay = lr * weight_decay if weight_decay else tf.constant(0.0)
        kernels.apply_adamw(w.handle, m_var.handle, v_var.handle, tf.cast(tf.convert_to_tensor(gradient), tf.float32),
                            scale, lr * (a1 / c1 / k), decay, beta1=beta_1, beta2=beta_2, epsilon=epsilon / k)
