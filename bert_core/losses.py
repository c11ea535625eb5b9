"""The losses of the three tasks, as Google's run_pretraining.py, run_classifier.py and run_squad.py
compute them, on the models' float32 logits (bert_core.modeling).

A training loss takes (outputs, features, ops) and returns (loss, metrics): bert_core.training.Trainer
calls it so, with the ops it chose for the step (bert_core.ops); the masked-LM cross-entropy over the
vocabulary is the one place a loss goes through them.
"""

from __future__ import annotations

import tensorflow as tf

from bert_core.ops import PLAIN, Ops


def pretraining_loss(outputs: dict, features: dict, ops: Ops = PLAIN) -> tuple[tf.Tensor, dict]:
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
    rows = tf.reshape(mlm_logits, [-1, tf.shape(mlm_logits)[-1]])                        # [B * P, V]
    nll, prediction = ops.cross_entropy_with_argmax(rows, tf.reshape(label_ids, [-1]))  # [B * P] each
    mlm_nll = tf.reshape(nll, tf.shape(label_ids))                                       # [B, P]
    mlm_prediction = tf.reshape(prediction, tf.shape(label_ids))                         # [B, P]
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


def span_loss(start_logits: tf.Tensor, end_logits: tf.Tensor, start_positions: tf.Tensor,
              end_positions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """run_squad.py's loss: the mean of the start and end cross-entropies over the sequence
    positions, logits [B, S] -> (loss, start_loss, end_loss)."""

    def position_loss(logits, positions):
        labels = tf.cast(tf.reshape(positions, [-1]), tf.int32)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=tf.cast(logits, tf.float32)))

    start = position_loss(start_logits, start_positions)
    end = position_loss(end_logits, end_positions)
    return (start + end) / 2.0, start, end
