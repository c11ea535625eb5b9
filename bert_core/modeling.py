"""The BERT encoder and its heads, as Keras 3 layers on the TensorFlow backend.

Parts, each a layer of its own (TF Model Garden style), composed into models:

  BertEmbeddings      word + token-type + position embeddings -> LayerNorm -> dropout
  TransformerLayer    masked self-attention -> add & LayerNorm -> GELU feed-forward -> add & LayerNorm
  BertModel           embeddings, N transformer layers, tanh pooler on [CLS]
  MaskedLMHead        gather masked positions -> dense + act -> LayerNorm -> tied output embeddings + bias
  NextSentenceHead    2-way classifier on the pooled output
  ClassificationHead  dropout -> dense num_labels on the pooled output (num_labels == 1: regression)
  SpanHead            dense 2 on every position -> start/end logits (SQuAD)
  BertPretrainer, BertClassifier, BertSpanLabeler   BertModel + head(s)

Variable names. Every layer builds its weights inside name scopes that spell Google's TF1 variable
names, so a variable's Keras `path` ends with its Google name:

  <model>/bert/encoder/layer_3/attention/self/query/kernel  <->  bert/encoder/layer_3/attention/self/query/kernel

`checkpoint_variables()` on every model returns the explicit {google_name: variable} map that
bert_core.checkpoints reads and writes. LayerNorm weights live under `.../LayerNorm/{gamma,beta}` and
every bias's name ends in `bias` (`.../bias`, `output_bias`), so an optimizer that excludes paths
containing "LayerNorm", "layer_norm" or "bias" from weight decay finds exactly those.

Mixed precision follows the Keras dtype policy (`mixed_float16`, `mixed_bfloat16`): variables stay
float32, matmuls run in the compute dtype, LayerNorm and the attention softmax are computed in
float32, and every head returns float32 logits.

Shapes in comments: B = batch, S = sequence length, H = hidden size, A = heads, D = H / A (head size),
I = intermediate size, P = masked positions per sequence, V = vocab size, L = layers.
"""

from __future__ import annotations

import math
from typing import Callable

import keras
import tensorflow as tf

from bert_core import kernels
from bert_core.config import BertConfig

# Google's additive attention mask: padded keys get -10000 before the softmax.
MASK_ADDER = -10000.0


# --------------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------------
def gelu(x: tf.Tensor) -> tf.Tensor:
    """Exact GELU, x * Phi(x) with the normal CDF through erf (Google's original, HF's "gelu")."""
    if kernels.active(x.dtype):
        return kernels.gelu(x)
    return 0.5 * x * (1.0 + tf.math.erf(x / tf.cast(math.sqrt(2.0), x.dtype)))


def gelu_tanh(x: tf.Tensor) -> tf.Tensor:
    """The tanh approximation of GELU (bert-tensorflow 1.0.4's `gelu`, HF's "gelu_new")."""
    c = tf.cast(math.sqrt(2.0 / math.pi), x.dtype)
    return 0.5 * x * (1.0 + tf.tanh(c * (x + tf.cast(0.044715, x.dtype) * x * x * x)))


def get_activation(name: str) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """Maps a config's hidden_act to a function; "linear" -> None (no activation)."""
    table = {
        "gelu": gelu,
        "gelu_new": gelu_tanh,
        "gelu_tanh": gelu_tanh,
        "gelu_pytorch_tanh": gelu_tanh,
        "relu": tf.nn.relu,
        "tanh": tf.tanh,
        "linear": None,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(table)}")
    return table[name]


def _initializer(config: BertConfig) -> keras.initializers.Initializer:
    return keras.initializers.TruncatedNormal(stddev=config.initializer_range)


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------
class LayerNorm(keras.layers.Layer):
    """Layer normalization over the last axis, computed in float32 whatever the dtype policy.

    Weights `gamma` (ones) and `beta` (zeros), named as Google's `LayerNorm/gamma|beta`. The result is
    cast back to the compute dtype so the next matmul runs in half precision under a mixed policy.
    """

    def __init__(self, epsilon: float = 1e-12, name: str = "LayerNorm", **kwargs):
        super().__init__(name=name, **kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        width = input_shape[-1]
        # autocast=False: read as float32 even inside a mixed-precision layer's call.
        self.gamma = self.add_weight(name="gamma", shape=(width,), initializer="ones", dtype="float32",
                                     autocast=False)
        self.beta = self.add_weight(name="beta", shape=(width,), initializer="zeros", dtype="float32",
                                    autocast=False)

    def call(self, x):
        y = layer_norm(tf.cast(x, tf.float32), tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta),
                       self.epsilon)
        return tf.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def layer_norm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float) -> tf.Tensor:
    """(x - mean) / sqrt(var + epsilon) * gamma + beta over the last axis, with the closed-form
    gradient (dx = r (g - mean(g) - x_hat mean(g x_hat)), g = dy gamma, r = 1 / sqrt(var + eps))
    instead of autodiff through moments: about half the backward ops (measured ~20% less time for
    forward + backward on CPU). Inside a training step on CPU: the fused kernel (bert_core.kernels)."""
    if kernels.active(tf.float32):
        return kernels.layer_norm(x, gamma, beta, epsilon)

    @tf.custom_gradient
    def forward(x, gamma, beta):
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        r = tf.math.rsqrt(variance + epsilon)
        x_hat = (x - mean) * r

        def grad(dy):
            g = dy * gamma
            dx = r * (g - tf.reduce_mean(g, axis=-1, keepdims=True)
                      - x_hat * tf.reduce_mean(g * x_hat, axis=-1, keepdims=True))
            rows = tf.range(tf.rank(dy) - 1)
            return dx, tf.reduce_sum(dy * x_hat, axis=rows), tf.reduce_sum(dy, axis=rows)

        return x_hat * gamma + beta, grad

    return forward(x, gamma, beta)


class Dropout(keras.layers.Dropout):
    """keras.layers.Dropout, through the fused CPU kernel inside a training step (bert_core.kernels):
    one pass forward, one backward, 16 random bits an element. Same layer name and seed generator."""

    def call(self, inputs, training=False):
        if training and self.rate > 0 and self.noise_shape is None and kernels.active(inputs.dtype):
            return kernels.dropout(inputs, self.rate, self.seed_generator.next())
        return super().call(inputs, training=training)


class Dense(keras.layers.Dense):
    """keras.layers.Dense; on [rows, in] inside a training step on CPU (`kernels.active`): with exact
    GELU, the bias and GELU are one fused kernel whose backward also gives the bias gradient (no
    separate pass); without an activation, `kernels.dense` (a faster weight gradient)."""

    def call(self, inputs, training=None):
        if (self.activation is gelu and self.use_bias and inputs.shape.rank == 2
                and kernels.active(self.compute_dtype)):
            return kernels.bias_gelu(tf.matmul(inputs, self.kernel), self.bias)
        if (self.activation is keras.activations.linear and self.use_bias and inputs.shape.rank == 2
                and kernels.active(self.compute_dtype)):
            return kernels.dense(inputs, self.kernel, self.bias)
        return super().call(inputs, training=training)


def _dense(units: int, config: BertConfig, name: str, dtype, activation=None) -> keras.layers.Dense:
    """A dense layer with Google's initializers: kernel [in, out] truncated normal, bias zeros."""
    return Dense(units, activation=activation, kernel_initializer=_initializer(config),
                 bias_initializer="zeros", name=name, dtype=dtype)


class BertEmbeddings(keras.layers.Layer):
    """input_ids, segment_ids [B, S] -> embedding_output [B, S, H].

    Weights: word_embeddings [V, H] (also the masked-LM output matrix), token_type_embeddings [T, H],
    position_embeddings [max_position_embeddings, H], LayerNorm.
    """

    def __init__(self, config: BertConfig, name: str = "embeddings", **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.layer_norm = LayerNorm(config.layer_norm_eps, dtype=self.dtype_policy)
        self.dropout = Dropout(config.hidden_dropout_prob, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        c = self.config
        init = _initializer(c)
        self.word_embeddings = self.add_weight(
            name="word_embeddings", shape=(c.vocab_size, c.hidden_size), initializer=init)
        self.token_type_embeddings = self.add_weight(
            name="token_type_embeddings", shape=(c.type_vocab_size, c.hidden_size), initializer=init)
        self.position_embeddings = self.add_weight(
            name="position_embeddings", shape=(c.max_position_embeddings, c.hidden_size), initializer=init)
        self.layer_norm.build((None, None, c.hidden_size))

    def call(self, input_ids, segment_ids, training=False):
        seq_length = input_ids.shape[1]
        if seq_length is not None and seq_length > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {seq_length} exceeds max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        dtype = self.compute_dtype
        words = tf.gather(tf.cast(self.word_embeddings, dtype), input_ids)               # [B, S, H]
        types = tf.gather(tf.cast(self.token_type_embeddings, dtype), segment_ids)       # [B, S, H]
        positions = tf.cast(self.position_embeddings, dtype)[:tf.shape(input_ids)[1]]    # [S, H]
        x = words + types + positions[tf.newaxis]                                        # [B, S, H]
        return self.dropout(self.layer_norm(x), training=training)


class SelfAttention(keras.layers.Layer):
    """Multi-head scaled dot-product self-attention with Google's additive mask.

    x [B, S, H], mask [B, 1, 1|S, S] (1 for keys to attend, 0 for padding) -> context [B, S, H].
    Weights: query, key, value (dense H -> H each). Softmax in float32.
    """

    def __init__(self, config: BertConfig, name: str = "self", **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = _dense(config.hidden_size, config, "query", self.dtype_policy)
        self.key = _dense(config.hidden_size, config, "key", self.dtype_policy)
        self.value = _dense(config.hidden_size, config, "value", self.dtype_policy)
        self.dropout = Dropout(config.attention_probs_dropout_prob, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        shape = (None, None, self.config.hidden_size)
        for layer in (self.query, self.key, self.value):
            layer.build(shape)

    def _split_heads(self, x, batch, seq):
        x = tf.reshape(x, [batch, seq, self.num_heads, self.head_size])                 # [B, S, A, D]
        return tf.transpose(x, [0, 2, 1, 3])                                             # [B, A, S, D]

    def call(self, x, mask, training=False):
        # Batched matmuls over [B, A, S, D] rather than tf.einsum("bqad,bkad->baqk"): the same
        # products, but measured ~15% faster forward + backward for BERT-Mini's shape on CPU.
        batch, seq = tf.shape(x)[0], tf.shape(x)[1]
        rows = tf.reshape(x, [-1, self.config.hidden_size])                              # [B * S, H]
        q = self._split_heads(self.query(rows), batch, seq)                              # [B, A, S, D]
        k = self._split_heads(self.key(rows), batch, seq)                                # [B, A, S, D]
        v = self._split_heads(self.value(rows), batch, seq)                              # [B, A, S, D]
        scores = tf.matmul(q, k, transpose_b=True)                                       # [B, A, S, S]
        scores = tf.cast(scores, tf.float32) * (1.0 / math.sqrt(self.head_size))       # softmax in float32
        scores += attention_mask_adder(mask)                                             # [B, A, S, S]
        if kernels.active(self.compute_dtype):
            # Training step on CPU: the dropout kernel, and one fused pass for the backward of both.
            drop = training and self.dropout.rate > 0
            seed = self.dropout.seed_generator.next() if drop else None
            probs = kernels.softmax_dropout(scores, self.dropout.rate, seed)             # [B, A, S, S]
        else:
            probs = tf.cast(tf.nn.softmax(scores, axis=-1), self.compute_dtype)          # [B, A, S, S]
            probs = self.dropout(probs, training=training)
        context = tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3])                        # [B, S, A, D]
        return tf.reshape(context, [batch, seq, self.config.hidden_size])                # [B, S, H]


class TransformerLayer(keras.layers.Layer):
    """One post-LayerNorm transformer block, Google's `layer_N`:

      attention/self/{query,key,value}   attention/output/{dense,LayerNorm}
      intermediate/dense                 output/{dense,LayerNorm}

    x [B, S, H] -> [B, S, H].
    """

    def __init__(self, config: BertConfig, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        dtype = self.dtype_policy
        self.attention = SelfAttention(config, dtype=dtype)
        self.attention_dense = _dense(config.hidden_size, config, "dense", dtype)
        self.attention_layer_norm = LayerNorm(config.layer_norm_eps, dtype=dtype)
        self.intermediate_dense = _dense(config.intermediate_size, config, "dense", dtype,
                                         activation=get_activation(config.hidden_act))
        self.output_dense = _dense(config.hidden_size, config, "dense", dtype)
        self.output_layer_norm = LayerNorm(config.layer_norm_eps, dtype=dtype)
        self.dropout = Dropout(config.hidden_dropout_prob, dtype=dtype)

    def build(self, input_shape=None):
        hidden = (None, None, self.config.hidden_size)
        with keras.name_scope("attention"):
            self.attention.build(hidden)
            with keras.name_scope("output"):
                self.attention_dense.build(hidden)
                self.attention_layer_norm.build(hidden)
        with keras.name_scope("intermediate"):
            self.intermediate_dense.build(hidden)
        with keras.name_scope("output"):
            self.output_dense.build((None, None, self.config.intermediate_size))
            self.output_layer_norm.build(hidden)

    def call(self, x, mask, training=False):
        # The dense layers see [B * S, width] rows: a 2-D matmul + bias is one oneDNN kernel, while
        # Keras's [B, S, width] path is a tensordot plus a separate bias pass.
        width = self.config.hidden_size
        rows = tf.reshape(x, [-1, width])                                                # [B * S, H]
        context = tf.reshape(self.attention(x, mask, training=training), [-1, width])   # [B * S, H]
        attention_output = self.dropout(self.attention_dense(context), training=training)
        attention_output = self.attention_layer_norm(attention_output + rows)            # [B * S, H]
        intermediate = self.intermediate_dense(attention_output)                         # [B * S, I]
        output = self.dropout(self.output_dense(intermediate), training=training)        # [B * S, H]
        return tf.reshape(self.output_layer_norm(output + attention_output), tf.shape(x))  # [B, S, H]


def attention_mask(input_mask: tf.Tensor) -> tf.Tensor:
    """input_mask [B, S] (1 = token, 0 = padding), or [B, S, S] per query -> int32 [B, 1, 1, S]
    (or [B, 1, S, S]) that broadcasts over heads and queries. Kept integer so that Keras's casting
    of float call arguments to the compute dtype leaves it alone."""
    mask = tf.cast(input_mask, tf.int32)
    if mask.shape.rank == 2:
        return mask[:, tf.newaxis, tf.newaxis, :]                                        # [B, 1, 1, S]
    return mask[:, tf.newaxis, :, :]                                                     # [B, 1, S, S]


def attention_mask_adder(mask: tf.Tensor) -> tf.Tensor:
    """Google's additive mask in float32: 0 where attention is allowed, -10000 where not."""
    return (1.0 - tf.cast(mask, tf.float32)) * MASK_ADDER


def _inputs(features) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """input_ids, input_mask, segment_ids from a features dict (mask: all ones, segments: zeros)."""
    if not isinstance(features, dict):
        features = {"input_ids": features}
    input_ids = tf.convert_to_tensor(features["input_ids"])
    if input_ids.dtype not in (tf.int32, tf.int64):
        input_ids = tf.cast(input_ids, tf.int32)
    input_mask = features.get("input_mask")
    if input_mask is None:
        input_mask = tf.ones_like(input_ids)
    segment_ids = features.get("segment_ids")
    if segment_ids is None:
        segment_ids = tf.zeros_like(input_ids)
    return input_ids, tf.convert_to_tensor(input_mask), tf.convert_to_tensor(segment_ids)


class _CheckpointNames:
    """Mixin: `checkpoint_variables()` -> {Google TF1 name: variable}, from the layers' structure."""

    def checkpoint_variables(self) -> dict[str, keras.Variable]:
        raise NotImplementedError

    def ensure_built(self) -> None:
        if not self.built:
            self.build()


def _layer_norm_vars(prefix: str, ln: LayerNorm) -> dict:
    return {f"{prefix}/LayerNorm/gamma": ln.gamma, f"{prefix}/LayerNorm/beta": ln.beta}


def _dense_vars(prefix: str, dense: keras.layers.Dense) -> dict:
    return {f"{prefix}/kernel": dense.kernel, f"{prefix}/bias": dense.bias}


# --------------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------------
class BertModel(_CheckpointNames, keras.Model):
    """features {input_ids [B, S], input_mask [B, S] (optional), segment_ids [B, S] (optional)} ->

      sequence_output   [B, S, H]   the last layer's output
      pooled_output     [B, H]      tanh(dense(sequence_output[:, 0]))
      encoder_outputs   list of L   [B, S, H], every transformer layer's output in order
      embedding_output  [B, S, H]   the embeddings after LayerNorm and dropout
    """

    def __init__(self, config: BertConfig, name: str = "bert", **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        dtype = self.dtype_policy
        self.embeddings = BertEmbeddings(config, dtype=dtype)
        self.encoder_layers = [TransformerLayer(config, name=f"layer_{i}", dtype=dtype)
                               for i in range(config.num_hidden_layers)]
        self.pooler = _dense(config.hidden_size, config, "dense", dtype, activation="tanh")

    def build(self, input_shape=None):
        hidden = (None, None, self.config.hidden_size)
        self.embeddings.build()
        with keras.name_scope("encoder"):
            for layer in self.encoder_layers:
                layer.build(hidden)
        with keras.name_scope("pooler"):
            self.pooler.build((None, self.config.hidden_size))
        self.built = True

    def call(self, features, training=False):
        input_ids, input_mask, segment_ids = _inputs(features)
        mask = attention_mask(input_mask)                                                # [B, 1, 1, S]
        x = self.embeddings(input_ids, segment_ids, training=training)                   # [B, S, H]
        embedding_output = x
        encoder_outputs = []
        for layer in self.encoder_layers:
            x = layer(x, mask, training=training)                                        # [B, S, H]
            encoder_outputs.append(x)
        pooled_output = self.pooler(x[:, 0, :])                                          # [B, H]
        return {
            "sequence_output": x,
            "pooled_output": pooled_output,
            "encoder_outputs": encoder_outputs,
            "embedding_output": embedding_output,
        }

    def get_embedding_table(self) -> keras.Variable:
        return self.embeddings.word_embeddings

    def checkpoint_variables(self) -> dict[str, keras.Variable]:
        self.ensure_built()
        e = self.embeddings
        out = {
            "bert/embeddings/word_embeddings": e.word_embeddings,
            "bert/embeddings/token_type_embeddings": e.token_type_embeddings,
            "bert/embeddings/position_embeddings": e.position_embeddings,
            **_layer_norm_vars("bert/embeddings", e.layer_norm),
        }
        for i, layer in enumerate(self.encoder_layers):
            p = f"bert/encoder/layer_{i}"
            a = layer.attention
            out.update(_dense_vars(f"{p}/attention/self/query", a.query))
            out.update(_dense_vars(f"{p}/attention/self/key", a.key))
            out.update(_dense_vars(f"{p}/attention/self/value", a.value))
            out.update(_dense_vars(f"{p}/attention/output/dense", layer.attention_dense))
            out.update(_layer_norm_vars(f"{p}/attention/output", layer.attention_layer_norm))
            out.update(_dense_vars(f"{p}/intermediate/dense", layer.intermediate_dense))
            out.update(_dense_vars(f"{p}/output/dense", layer.output_dense))
            out.update(_layer_norm_vars(f"{p}/output", layer.output_layer_norm))
        out.update(_dense_vars("bert/pooler/dense", self.pooler))
        return out

    def dummy_inputs(self, batch_size: int = 1, seq_length: int = 2) -> dict:
        ids = tf.zeros([batch_size, seq_length], tf.int32)
        return {"input_ids": ids, "input_mask": tf.ones_like(ids), "segment_ids": ids}


# --------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------
class MaskedLMHead(keras.layers.Layer):
    """sequence_output [B, S, H], masked_lm_positions [B, P] -> logits [B, P, V] (float32).

    Only the P masked positions go through the transform and the [H, V] output matmul. The output
    matrix is the word-embedding table (tied); `output_bias` [V] is the head's own.
    Google's names: cls/predictions/transform/dense, cls/predictions/transform/LayerNorm,
    cls/predictions/output_bias.
    """

    def __init__(self, config: BertConfig, embeddings: BertEmbeddings, name: str = "predictions", **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.embeddings = embeddings  # shared with the encoder: its word_embeddings is the output matrix
        self.transform_dense = _dense(config.hidden_size, config, "dense", self.dtype_policy,
                                      activation=get_activation(config.hidden_act))
        self.transform_layer_norm = LayerNorm(config.layer_norm_eps, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        hidden = (None, None, self.config.hidden_size)
        with keras.name_scope("transform"):
            self.transform_dense.build(hidden)
            self.transform_layer_norm.build(hidden)
        self.output_bias = self.add_weight(name="output_bias", shape=(self.config.vocab_size,),
                                           initializer="zeros", dtype="float32")

    def call(self, sequence_output, masked_lm_positions):
        positions = tf.cast(masked_lm_positions, tf.int32)
        x = tf.gather(sequence_output, positions, batch_dims=1)                          # [B, P, H]
        x = self.transform_layer_norm(self.transform_dense(x))                           # [B, P, H]
        table = tf.cast(self.embeddings.word_embeddings, self.compute_dtype)             # [V, H]
        # A 2-D matmul + bias_add (which oneDNN fuses into one kernel, and whose gradient is one
        # BiasAddGrad) rather than an einsum and a broadcast add over the [B * P, V] logits.
        rows = tf.reshape(x, [-1, self.config.hidden_size])                               # [B * P, H]
        if kernels.active(self.compute_dtype):
            logits = kernels.dense(rows, table, self.output_bias, transpose_kernel=True)     # [B * P, V]
        else:
            logits = tf.cast(tf.matmul(rows, table, transpose_b=True), tf.float32)        # [B * P, V]
            logits = tf.nn.bias_add(logits, tf.cast(self.output_bias, tf.float32))
        return tf.reshape(logits, tf.concat([tf.shape(x)[:2], [self.config.vocab_size]], 0))  # [B, P, V]

    def checkpoint_variables(self) -> dict:
        return {
            **_dense_vars("cls/predictions/transform/dense", self.transform_dense),
            **_layer_norm_vars("cls/predictions/transform", self.transform_layer_norm),
            "cls/predictions/output_bias": self.output_bias,
        }


class _LogitsLayer(keras.layers.Layer):
    """x [..., H] -> x @ output_weights^T + output_bias [..., N] in float32; output_weights is
    stored [N, H] as in Google's run_pretraining/run_classifier/run_squad."""

    def __init__(self, config: BertConfig, units: int, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.units = units

    def build(self, input_shape=None):
        self.output_weights = self.add_weight(name="output_weights", shape=(self.units, self.config.hidden_size),
                                              initializer=_initializer(self.config))
        self.output_bias = self.add_weight(name="output_bias", shape=(self.units,), initializer="zeros")

    def call(self, x):
        # A plain 2-D matmul on [rows, H], not tf.einsum("...h,nh->...n"): on CPU with oneDNN
        # (TF 2.18) that ellipsis einsum returns wrong logits for every row after the 16th of a
        # rank-2 input (a [32, H] batch), which silently ruined fine-tuning with batch 32.
        weights = tf.cast(self.output_weights, self.compute_dtype)
        rows = tf.reshape(x, [-1, tf.shape(x)[-1]])                                      # [rows, H]
        logits = tf.matmul(rows, weights, transpose_b=True)                              # [rows, N]
        logits = tf.reshape(logits, tf.concat([tf.shape(x)[:-1], [self.units]], axis=0))  # [..., N]
        return tf.cast(logits, tf.float32) + tf.cast(self.output_bias, tf.float32)

    def checkpoint_variables(self, prefix: str) -> dict:
        pre = f"{prefix}/" if prefix else ""
        return {f"{pre}output_weights": self.output_weights, f"{pre}output_bias": self.output_bias}


class NextSentenceHead(_LogitsLayer):
    """pooled_output [B, H] -> logits [B, 2] (0 = is next, 1 = random). cls/seq_relationship/*."""

    def __init__(self, config: BertConfig, name: str = "seq_relationship", **kwargs):
        super().__init__(config, 2, name=name, **kwargs)

    def checkpoint_variables(self, prefix: str = "cls/seq_relationship") -> dict:
        return super().checkpoint_variables(prefix)


class ClassificationHead(_LogitsLayer):
    """pooled_output [B, H] -> dropout -> logits [B, num_labels] (float32).

    num_labels == 1 makes it a regression head (STS-B): logits[:, 0] is the score; see
    `classification_loss`. Google's run_classifier.py names: output_weights, output_bias.
    """

    def __init__(self, config: BertConfig, num_labels: int, name: str = "classifier", **kwargs):
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        super().__init__(config, num_labels, name=name, **kwargs)
        self.num_labels = num_labels
        self.dropout = Dropout(config.hidden_dropout_prob, dtype=self.dtype_policy)

    def call(self, pooled_output, training=False):
        return super().call(self.dropout(pooled_output, training=training))

    def checkpoint_variables(self, prefix: str = "") -> dict:
        return super().checkpoint_variables(prefix)


class SpanHead(_LogitsLayer):
    """sequence_output [B, S, H] -> start_logits, end_logits [B, S] (float32). cls/squad/* as run_squad.py."""

    def __init__(self, config: BertConfig, name: str = "squad", **kwargs):
        super().__init__(config, 2, name=name, **kwargs)

    def call(self, sequence_output):
        logits = super().call(sequence_output)                                           # [B, S, 2]
        return logits[..., 0], logits[..., 1]

    def checkpoint_variables(self, prefix: str = "cls/squad") -> dict:
        return super().checkpoint_variables(prefix)


# --------------------------------------------------------------------------------------------------
# Models: encoder + heads
# --------------------------------------------------------------------------------------------------
class BertPretrainer(_CheckpointNames, keras.Model):
    """features {input_ids, input_mask, segment_ids [B, S], masked_lm_positions [B, P]} ->

      mlm_logits        [B, P, V] float32   masked-LM logits at the masked positions
      nsp_logits        [B, 2]    float32   next-sentence logits
      sequence_output, pooled_output, encoder_outputs, embedding_output   from BertModel
    """

    def __init__(self, config: BertConfig, name: str = "pretrainer", **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        dtype = self.dtype_policy
        self.bert = BertModel(config, dtype=dtype)
        self.masked_lm = MaskedLMHead(config, self.bert.embeddings, dtype=dtype)
        self.next_sentence = NextSentenceHead(config, dtype=dtype)

    def build(self, input_shape=None):
        if not self.bert.built:
            self.bert.build()
        with keras.name_scope("cls"):
            self.masked_lm.build()
            self.next_sentence.build()
        self.built = True

    def call(self, features, training=False):
        outputs = dict(self.bert(features, training=training))
        outputs["mlm_logits"] = self.masked_lm(outputs["sequence_output"], features["masked_lm_positions"])
        outputs["nsp_logits"] = self.next_sentence(outputs["pooled_output"])
        return outputs

    def checkpoint_variables(self) -> dict[str, keras.Variable]:
        self.ensure_built()
        return {**self.bert.checkpoint_variables(), **self.masked_lm.checkpoint_variables(),
                **self.next_sentence.checkpoint_variables()}

    def dummy_inputs(self, batch_size: int = 1, seq_length: int = 2) -> dict:
        features = self.bert.dummy_inputs(batch_size, seq_length)
        features["masked_lm_positions"] = tf.zeros([batch_size, 1], tf.int32)
        return features


class BertClassifier(_CheckpointNames, keras.Model):
    """features -> {"logits": [B, num_labels] float32, "pooled_output", "sequence_output", ...}."""

    def __init__(self, config: BertConfig, num_labels: int, name: str = "bert_classifier", **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.num_labels = num_labels
        self.bert = BertModel(config, dtype=self.dtype_policy)
        self.classifier = ClassificationHead(config, num_labels, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        if not self.bert.built:
            self.bert.build()
        self.classifier.build()
        self.built = True

    def call(self, features, training=False):
        outputs = dict(self.bert(features, training=training))
        outputs["logits"] = self.classifier(outputs["pooled_output"], training=training)
        return outputs

    def checkpoint_variables(self) -> dict[str, keras.Variable]:
        self.ensure_built()
        return {**self.bert.checkpoint_variables(), **self.classifier.checkpoint_variables()}


class BertSpanLabeler(_CheckpointNames, keras.Model):
    """features -> {"start_logits": [B, S], "end_logits": [B, S] float32, "sequence_output", ...}."""

    def __init__(self, config: BertConfig, name: str = "bert_span_labeler", **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.bert = BertModel(config, dtype=self.dtype_policy)
        self.span = SpanHead(config, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        if not self.bert.built:
            self.bert.build()
        with keras.name_scope("cls"):
            self.span.build()
        self.built = True

    def call(self, features, training=False):
        outputs = dict(self.bert(features, training=training))
        outputs["start_logits"], outputs["end_logits"] = self.span(outputs["sequence_output"])
        return outputs

    def checkpoint_variables(self) -> dict[str, keras.Variable]:
        self.ensure_built()
        return {**self.bert.checkpoint_variables(), **self.span.checkpoint_variables()}


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------
def sparse_cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """-log softmax(logits)[label] per row, float32: logits [..., V], labels [...] -> [...].

    The value of tf.nn.sparse_softmax_cross_entropy_with_logits, computed faster for a large V (the
    masked-LM's 30k-word softmax): the forward is one oneDNN softmax plus two row maxima, the backward
    one scaled pass over the kept probabilities minus dy at each label, instead of the fused op's
    single-threaded softmax-and-gradient (measured 91 -> 51 ms forward + backward for [640, 30522]
    on 2 CPU cores with an exp-based version of this). In a training step on CPU: the fused kernel.
    An out-of-range label fails in the gather, as it does in the fused op."""
    return sparse_cross_entropy_and_argmax(logits, labels)[0]


def sparse_cross_entropy_and_argmax(logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(sparse_cross_entropy(logits, labels), argmax(logits, -1) as int32), both shaped like labels.
    The fused kernel gives both from one read of the logits (TF's ArgMax over [640, 30522] is a
    single-threaded ~10 ms on 2 CPU cores)."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    rows = tf.reshape(logits, [-1, tf.shape(logits)[-1]])                                # [N, V]
    if kernels.active(tf.float32):
        nll, argmax = kernels.sparse_cross_entropy(rows, tf.reshape(labels, [-1]))     # [N], [N]
        return tf.reshape(nll, tf.shape(labels)), tf.reshape(argmax, tf.shape(labels))
    nll = _row_cross_entropy(rows, tf.reshape(labels, [-1]))                             # [N]
    return tf.reshape(nll, tf.shape(labels)), tf.argmax(logits, axis=-1, output_type=tf.int32)


@tf.custom_gradient
def _row_cross_entropy(logits: tf.Tensor, labels: tf.Tensor):
    probs = tf.nn.softmax(logits, axis=-1)                                               # [N, V]
    # log-sum-exp = max(logits) - log(max(probs)): the largest probability is >= 1/V, so unlike
    # log(probs[label]) this never underflows, and the softmax is oneDNN's multi-threaded kernel.
    log_sum_exp = tf.reduce_max(logits, axis=-1) - tf.math.log(tf.reduce_max(probs, axis=-1))
    nll = log_sum_exp - tf.gather(logits, labels, batch_dims=1)                          # [N]

    def grad(dy):
        # d nll / d logits = softmax - one_hot(label)
        index = tf.stack([tf.range(tf.shape(labels)[0]), labels], axis=1)
        return tf.tensor_scatter_nd_sub(probs * dy[:, tf.newaxis], index, dy), None

    return nll, grad


def pretraining_loss(outputs: dict, features: dict) -> tuple[tf.Tensor, dict]:
    """Google's run_pretraining.py loss: masked-LM + next-sentence, float32.

    masked_lm_loss = sum(w * nll) / (sum(w) + 1e-5) over the P slots (w = masked_lm_weights, 0 for
    padded slots); next_sentence_loss = mean nll over the batch; loss = their sum.

    The metrics dict also carries the sums an evaluation accumulates over batches to get Google's
    eval numbers exactly (tf.metrics.accuracy / tf.metrics.mean with weights):
      masked_lm_loss_sum = sum(w * nll), masked_lm_weight_sum = sum(w),
      masked_lm_correct = sum(w * [argmax == id]), next_sentence_loss_sum, next_sentence_correct,
      next_sentence_count; and this batch's masked_lm_accuracy, next_sentence_accuracy.
    """
    mlm_logits = tf.cast(outputs["mlm_logits"], tf.float32)                              # [B, P, V]
    label_ids = tf.cast(features["masked_lm_ids"], tf.int32)                             # [B, P]
    weights = tf.cast(features["masked_lm_weights"], tf.float32)                         # [B, P]
    mlm_nll, mlm_prediction = sparse_cross_entropy_and_argmax(mlm_logits, label_ids)     # [B, P] each
    weight_sum = tf.reduce_sum(weights)
    mlm_loss_sum = tf.reduce_sum(weights * mlm_nll)
    masked_lm_loss = mlm_loss_sum / (weight_sum + 1e-5)

    nsp_logits = tf.cast(outputs["nsp_logits"], tf.float32)                              # [B, 2]
    nsp_labels = tf.reshape(tf.cast(features["next_sentence_labels"], tf.int32), [-1])   # [B]
    nsp_nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=nsp_labels, logits=nsp_logits)  # [B]
    next_sentence_loss = tf.reduce_mean(nsp_nll)

    mlm_hit = tf.cast(tf.equal(mlm_prediction, label_ids), tf.float32)
    nsp_hit = tf.cast(tf.equal(tf.argmax(nsp_logits, axis=-1, output_type=tf.int32), nsp_labels), tf.float32)
    mlm_correct = tf.reduce_sum(weights * mlm_hit)
    nsp_count = tf.cast(tf.size(nsp_labels), tf.float32)
    metrics = {
        "masked_lm_loss": masked_lm_loss,
        "next_sentence_loss": next_sentence_loss,
        "masked_lm_accuracy": mlm_correct / tf.maximum(weight_sum, 1e-12),
        "next_sentence_accuracy": tf.reduce_sum(nsp_hit) / tf.maximum(nsp_count, 1.0),
        "masked_lm_loss_sum": mlm_loss_sum,
        "masked_lm_weight_sum": weight_sum,
        "masked_lm_correct": mlm_correct,
        "next_sentence_loss_sum": tf.reduce_sum(nsp_nll),
        "next_sentence_correct": tf.reduce_sum(nsp_hit),
        "next_sentence_count": nsp_count,
    }
    return masked_lm_loss + next_sentence_loss, metrics


def classification_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy for logits [B, N>1] (as run_classifier.py); mean squared error of
    logits[:, 0] for a regression head (N == 1)."""
    logits = tf.cast(logits, tf.float32)
    if logits.shape[-1] == 1:
        return tf.reduce_mean(tf.square(logits[:, 0] - tf.cast(tf.reshape(labels, [-1]), tf.float32)))
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
