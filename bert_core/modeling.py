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

Hardware. Every layer's call takes `ops` (bert_core.ops; default PLAIN, textbook TensorFlow) and
does its dense layers, dropout, attention probabilities, LayerNorm and activations through it, the
way Google's modeling.py takes `use_one_hot_embeddings`: the caller decides (the Trainer, once per
training step), no layer looks at the device. The losses are in bert_core.losses.

Mixed precision follows the Keras dtype policy (`mixed_float16`, `mixed_bfloat16`): variables stay
float32, matmuls run in the compute dtype, LayerNorm and the attention softmax are computed in
float32, and every head returns float32 logits.

Shapes in comments: B = batch, S = sequence length, H = hidden size, A = heads, D = H / A (head size),
I = intermediate size, P = masked positions per sequence, V = vocab size, L = layers.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from bert_core.config import BertConfig
from bert_core.ops import PLAIN, Ops

# Google's additive attention mask: padded keys get -10000 before the softmax.
MASK_ADDER = -10000.0


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

    def call(self, x, ops: Ops = PLAIN):
        y = ops.layer_norm(tf.cast(x, tf.float32), tf.convert_to_tensor(self.gamma),
                           tf.convert_to_tensor(self.beta), self.epsilon)
        return tf.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


class DropoutLayer(keras.layers.Layer):
    """Inverted dropout at `rate` while training; the layer owns its seed generator (the state a
    checkpoint saves), the ops draw the mask."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, x, training=False, ops: Ops = PLAIN):
        if not training or not self.rate:
            return x
        return ops.dropout(x, self.rate, self.seed_generator)


class DenseLayer(keras.layers.Layer):
    """x [rows, in] -> activation(x @ kernel + bias) [rows, out]; the activation by its config name
    ("gelu", "tanh", ..., None). Weights `kernel` [in, out] (truncated normal) and `bias` [out]
    (zeros): Google's `.../dense/kernel|bias`. The model keeps activations 2-D for it, as Google's
    modeling.py does ("reshapes may not be free on the TPU")."""

    def __init__(self, units: int, config: BertConfig, activation: str | None = None, name: str = "dense",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.units = units
        self.activation = activation
        self.kernel_initializer = _initializer(config)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, x, ops: Ops = PLAIN):
        return ops.dense(x, self.kernel, self.bias, self.activation)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)


class BertEmbeddings(keras.layers.Layer):
    """input_ids, segment_ids [B, S] -> embedding_output [B, S, H].

    Weights: word_embeddings [V, H] (also the masked-LM output matrix), token_type_embeddings [T, H],
    position_embeddings [max_position_embeddings, H], LayerNorm.
    """

    def __init__(self, config: BertConfig, name: str = "embeddings", **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.layer_norm = LayerNorm(config.layer_norm_eps, dtype=self.dtype_policy)
        self.dropout = DropoutLayer(config.hidden_dropout_prob, dtype=self.dtype_policy)

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

    def call(self, input_ids, segment_ids, training=False, ops: Ops = PLAIN):
        seq_length = input_ids.shape[1]
        if seq_length is not None and seq_length > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {seq_length} exceeds max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        dtype = self.compute_dtype
        words = tf.gather(tf.cast(self.word_embeddings, dtype), input_ids)               # [B, S, H]
        types = tf.gather(tf.cast(self.token_type_embeddings, dtype), segment_ids)       # [B, S, H]
        positions = tf.cast(self.position_embeddings, dtype)[:tf.shape(input_ids)[1]]    # [S, H]
        x = words + types + positions[tf.newaxis]                                        # [B, S, H]
        return self.dropout(self.layer_norm(x, ops=ops), training=training, ops=ops)


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
        self.query = DenseLayer(config.hidden_size, config, name="query", dtype=self.dtype_policy)
        self.key = DenseLayer(config.hidden_size, config, name="key", dtype=self.dtype_policy)
        self.value = DenseLayer(config.hidden_size, config, name="value", dtype=self.dtype_policy)
        self.dropout = DropoutLayer(config.attention_probs_dropout_prob, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        shape = (None, None, self.config.hidden_size)
        for layer in (self.query, self.key, self.value):
            layer.build(shape)

    def _split_heads(self, x, batch, seq):
        x = tf.reshape(x, [batch, seq, self.num_heads, self.head_size])                 # [B, S, A, D]
        return tf.transpose(x, [0, 2, 1, 3])                                             # [B, A, S, D]

    def call(self, x, mask, training=False, ops: Ops = PLAIN):
        # Batched matmuls over [B, A, S, D] rather than tf.einsum("bqad,bkad->baqk"): the same
        # products, but measured ~15% faster forward + backward for BERT-Mini's shape on CPU.
        batch, seq = tf.shape(x)[0], tf.shape(x)[1]
        rows = tf.reshape(x, [-1, self.config.hidden_size])                              # [B * S, H]
        q = self._split_heads(self.query(rows, ops=ops), batch, seq)                     # [B, A, S, D]
        k = self._split_heads(self.key(rows, ops=ops), batch, seq)                       # [B, A, S, D]
        v = self._split_heads(self.value(rows, ops=ops), batch, seq)                     # [B, A, S, D]
        scores = tf.matmul(q, k, transpose_b=True)                                       # [B, A, S, S]
        scores = tf.cast(scores, tf.float32) * (1.0 / math.sqrt(self.head_size))       # softmax in float32
        scores += attention_mask_adder(mask)                                             # [B, A, S, S]
        seed = self.dropout.seed_generator if training else None
        probs = ops.attention_probs(scores, self.dropout.rate, seed, self.compute_dtype)  # [B, A, S, S]
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
        self.attention_dense = DenseLayer(config.hidden_size, config, dtype=dtype)
        self.attention_layer_norm = LayerNorm(config.layer_norm_eps, dtype=dtype)
        self.intermediate_dense = DenseLayer(config.intermediate_size, config, config.hidden_act, dtype=dtype)
        self.output_dense = DenseLayer(config.hidden_size, config, dtype=dtype)
        self.output_layer_norm = LayerNorm(config.layer_norm_eps, dtype=dtype)
        self.dropout = DropoutLayer(config.hidden_dropout_prob, dtype=dtype)

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

    def call(self, x, mask, training=False, ops: Ops = PLAIN):
        # The dense layers see [B * S, width] rows: a 2-D matmul + bias is one kernel (oneDNN fuses
        # them on CPU), while a [B, S, width] layer is a tensordot plus a separate bias pass.
        width = self.config.hidden_size
        rows = tf.reshape(x, [-1, width])                                                # [B * S, H]
        context = tf.reshape(self.attention(x, mask, training=training, ops=ops), [-1, width])  # [B * S, H]
        attention_output = self.dropout(self.attention_dense(context, ops=ops), training=training, ops=ops)
        attention_output = self.attention_layer_norm(attention_output + rows, ops=ops)   # [B * S, H]
        intermediate = self.intermediate_dense(attention_output, ops=ops)                # [B * S, I]
        output = self.dropout(self.output_dense(intermediate, ops=ops), training=training, ops=ops)  # [B * S, H]
        return tf.reshape(self.output_layer_norm(output + attention_output, ops=ops), tf.shape(x))  # [B, S, H]


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


def _dense_vars(prefix: str, dense: DenseLayer) -> dict:
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
        self.pooler = DenseLayer(config.hidden_size, config, "tanh", dtype=dtype)

    def build(self, input_shape=None):
        hidden = (None, None, self.config.hidden_size)
        self.embeddings.build()
        with keras.name_scope("encoder"):
            for layer in self.encoder_layers:
                layer.build(hidden)
        with keras.name_scope("pooler"):
            self.pooler.build((None, self.config.hidden_size))
        self.built = True

    def call(self, features, training=False, ops: Ops = PLAIN):
        input_ids, input_mask, segment_ids = _inputs(features)
        mask = attention_mask(input_mask)                                                # [B, 1, 1, S]
        x = self.embeddings(input_ids, segment_ids, training=training, ops=ops)          # [B, S, H]
        embedding_output = x
        encoder_outputs = []
        for layer in self.encoder_layers:
            x = layer(x, mask, training=training, ops=ops)                               # [B, S, H]
            encoder_outputs.append(x)
        pooled_output = self.pooler(x[:, 0, :], ops=ops)                                 # [B, H]
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
        self.transform_dense = DenseLayer(config.hidden_size, config, config.hidden_act, dtype=self.dtype_policy)
        self.transform_layer_norm = LayerNorm(config.layer_norm_eps, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        hidden = (None, None, self.config.hidden_size)
        with keras.name_scope("transform"):
            self.transform_dense.build(hidden)
            self.transform_layer_norm.build(hidden)
        self.output_bias = self.add_weight(name="output_bias", shape=(self.config.vocab_size,),
                                           initializer="zeros", dtype="float32")

    def call(self, sequence_output, masked_lm_positions, ops: Ops = PLAIN):
        positions = tf.cast(masked_lm_positions, tf.int32)
        x = tf.gather(sequence_output, positions, batch_dims=1)                          # [B, P, H]
        rows = tf.reshape(x, [-1, self.config.hidden_size])                              # [B * P, H]
        rows = self.transform_layer_norm(self.transform_dense(rows, ops=ops), ops=ops)   # [B * P, H]
        table = tf.cast(self.embeddings.word_embeddings, self.compute_dtype)             # [V, H]
        # A 2-D matmul + bias_add (one kernel, and its gradient one BiasAddGrad) rather than an
        # einsum and a broadcast add over the [B * P, V] logits.
        logits = ops.dense(rows, table, tf.cast(self.output_bias, self.compute_dtype),
                           transpose_kernel=True)                                        # [B * P, V]
        logits = tf.cast(logits, tf.float32)
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
        self.dropout = DropoutLayer(config.hidden_dropout_prob, dtype=self.dtype_policy)

    def call(self, pooled_output, training=False, ops: Ops = PLAIN):
        return super().call(self.dropout(pooled_output, training=training, ops=ops))

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

    def call(self, features, training=False, ops: Ops = PLAIN):
        outputs = dict(self.bert(features, training=training, ops=ops))
        outputs["mlm_logits"] = self.masked_lm(outputs["sequence_output"], features["masked_lm_positions"], ops=ops)
        outputs["nsp_logits"] = self.next_sentence(outputs["pooled_output"])
        return outputs

    def checkpoint_variables(self) -> dict[str, keras.Variable]:
        self.ensure_built()
        return {**self.bert.checkpoint_variables(), **self.masked_lm.checkpoint_variables(),
                **self.next_sentence.checkpoint_variables()}


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

    def call(self, features, training=False, ops: Ops = PLAIN):
        outputs = dict(self.bert(features, training=training, ops=ops))
        outputs["logits"] = self.classifier(outputs["pooled_output"], training=training, ops=ops)
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

    def call(self, features, training=False, ops: Ops = PLAIN):
        outputs = dict(self.bert(features, training=training, ops=ops))
        outputs["start_logits"], outputs["end_logits"] = self.span(outputs["sequence_output"])
        return outputs

    def checkpoint_variables(self) -> dict[str, keras.Variable]:
        self.ensure_built()
        return {**self.bert.checkpoint_variables(), **self.span.checkpoint_variables()}
