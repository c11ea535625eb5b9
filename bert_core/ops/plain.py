"""`plain`: the ops of the model and the optimizer as textbook TensorFlow/Keras.

This is what runs on a GPU, under XLA, in evaluation, prediction and export, and what every other
backend is tested against. Nothing here is tuned for a device: each method is the formula as
Google's modeling.py and optimization.py write it, on TF's own ops (which ROCm and XLA lower).
"""

from __future__ import annotations

import math
from typing import Callable

import keras
import tensorflow as tf


def _gelu_tanh(x: tf.Tensor) -> tf.Tensor:
    """The tanh approximation of GELU (bert-tensorflow 1.0.4's `gelu`, HF's "gelu_new")."""
    c = tf.cast(math.sqrt(2.0 / math.pi), x.dtype)
    return 0.5 * x * (1.0 + tf.tanh(c * (x + tf.cast(0.044715, x.dtype) * x * x * x)))


class PlainOps:
    """The ops interface, implemented with TensorFlow's own ops. A backend subclasses it and
    overrides what it does faster, falling back to these where it does not apply."""

    name = "plain"

    # -- activations --------------------------------------------------------------------------------
    def gelu(self, x: tf.Tensor) -> tf.Tensor:
        """Exact GELU, x * Phi(x) with the normal CDF through erf (Google's original, HF's "gelu")."""
        return 0.5 * x * (1.0 + tf.math.erf(x / tf.cast(math.sqrt(2.0), x.dtype)))

    def activation(self, name: str | None) -> Callable[[tf.Tensor], tf.Tensor] | None:
        """A config's `hidden_act` (bert_core.config.HIDDEN_ACTS) as a function; "linear"/None -> None."""
        table = {"gelu": self.gelu, "gelu_new": _gelu_tanh, "gelu_tanh": _gelu_tanh,
                 "gelu_pytorch_tanh": _gelu_tanh, "relu": tf.nn.relu, "tanh": tf.tanh, "linear": None, None: None}
        if name not in table:
            raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(k for k in table if k)}")
        return table[name]

    # -- layers ---------------------------------------------------------------------------------------
    def dense(self, x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, activation: str | None = None,
              transpose_kernel: bool = False) -> tf.Tensor:
        """activation(x @ kernel + bias) for x [rows, in], kernel [in, out] ([out, in] with
        transpose_kernel), bias [out] -> [rows, out]."""
        y = tf.nn.bias_add(tf.matmul(x, kernel, transpose_b=transpose_kernel), bias)
        fn = self.activation(activation)
        return y if fn is None else fn(y)

    def dropout(self, x: tf.Tensor, rate: float, seed: keras.random.SeedGenerator) -> tf.Tensor:
        """Inverted dropout (keras.layers.Dropout's): zero with probability rate, scale the rest."""
        return keras.random.dropout(x, rate, seed=seed)

    def attention_probs(self, scores: tf.Tensor, rate: float, seed: keras.random.SeedGenerator | None,
                        dtype) -> tf.Tensor:
        """dropout(softmax(scores)) over the last axis: scores [B, A, S, S] float32 -> probabilities in
        `dtype`. No dropout when seed is None (not training) or rate is 0."""
        probs = tf.cast(tf.nn.softmax(scores, axis=-1), dtype)
        return probs if seed is None or not rate else self.dropout(probs, rate, seed)

    def layer_norm(self, x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float) -> tf.Tensor:
        """(x - mean) / sqrt(var + epsilon) * gamma + beta over the last axis (float32)."""
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(variance + epsilon) * gamma + beta

    # -- loss -----------------------------------------------------------------------------------------
    def cross_entropy_with_argmax(self, logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """logits [N, V] float32, labels [N] int32 -> (-log softmax(logits)[label] [N],
        argmax(logits) [N] int32, the first maximum)."""
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return nll, tf.argmax(logits, axis=-1, output_type=tf.int32)

    # -- optimizer --------------------------------------------------------------------------------------
    def apply_adamw(self, variable, m, v, gradient: tf.Tensor, *, learning_rate: tf.Tensor, weight_decay: float,
                    beta_1: float, beta_2: float, epsilon: float, gradient_scale: tf.Tensor | None = None) -> None:
        """Google BERT's AdamWeightDecayOptimizer on one variable, in place (moments with NO bias
        correction; decoupled decay, weight_decay 0 where excluded):

            g = gradient * gradient_scale                     (the loop's clipping factor, if given)
            m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
            w = w - lr (m / (sqrt(v) + eps) + weight_decay w)
        """
        g = tf.cast(tf.convert_to_tensor(gradient), variable.dtype)  # IndexedSlices -> dense: every row's moments decay
        if gradient_scale is not None:
            g = g * tf.cast(gradient_scale, g.dtype)
        lr = tf.cast(learning_rate, variable.dtype)
        # (1 - b) from Python doubles: 1 - 0.999 formed in float32 is off by 1.3e-5 relative.
        next_m = beta_1 * m + (1.0 - beta_1) * g
        next_v = beta_2 * v + (1.0 - beta_2) * tf.square(g)
        update = next_m / (tf.sqrt(next_v) + epsilon)
        if weight_decay:
            update += weight_decay * variable
        m.assign(next_m)
        v.assign(next_v)
        variable.assign_sub(lr * update)
