"""A toy masked-LM + NSP model, its loss and its data, for exercising the training loop quickly.

The same features and loss shape as BERT pretraining (input_ids, masked_lm_positions/ids/weights,
next_sentence_labels), with a model small enough that a step takes milliseconds. Also a script:

    python tests/train_toy.py OUT_DIR --steps 10 --batch 8 [--kill_after 5] [--dtype fp16] ...

trains and saves the final weights as OUT_DIR/final_rank<r>.npz (used under horovodrun/mpirun and for
the SIGKILL resume test).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import numpy as np

VOCAB, SEQ, PREDS = 24, 8, 2


def make_examples(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n examples whose masked tokens are a function of their neighbours (learnable)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, VOCAB, size=(n, SEQ))
    pos = np.stack([rng.choice(np.arange(1, SEQ - 1), PREDS, replace=False) for _ in range(n)])
    mlm_ids = np.take_along_axis(ids, pos, 1)
    masked = ids.copy()
    np.put_along_axis(masked, pos, 3, 1)  # [MASK] = 3
    nsp = (ids[:, 0] % 2).reshape(n, 1)
    return {
        "input_ids": masked.astype(np.int64),
        "input_mask": np.ones((n, SEQ), np.int64),
        "segment_ids": np.zeros((n, SEQ), np.int64),
        "masked_lm_positions": pos.astype(np.int64),
        "masked_lm_ids": mlm_ids.astype(np.int64),
        "masked_lm_weights": np.ones((n, PREDS), np.float32),
        "next_sentence_labels": nsp.astype(np.int64),
    }


def make_dataset(examples, batch: int, rank: int = 0, size: int = 1, shuffle: bool = True, seed: int = 7):
    """Batches of `batch` per rank; rank r takes examples r, r+size, ... of each global batch, so size
    ranks with batch b see exactly the examples of one process with batch b*size."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(examples)
    if shuffle:
        ds = ds.shuffle(64, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().batch(batch * size, drop_remainder=True)
    if size > 1:
        ds = ds.map(lambda f: {k: v[rank::size] for k, v in f.items()})
    return ds.prefetch(2)


def build_model(dropout: float = 0.1, seed: int = 1, hidden: int = 32):
    import keras

    keras.utils.set_random_seed(seed)

    class Toy(keras.Model):
        def __init__(self):
            super().__init__()
            self.emb = keras.layers.Embedding(VOCAB, hidden)
            self.pos = keras.layers.Embedding(SEQ, hidden)
            self.mix = keras.layers.Dense(hidden * SEQ, activation="gelu")
            self.drop = keras.layers.Dropout(dropout)
            self.out = keras.layers.Dense(hidden)
            self.norm = keras.layers.LayerNormalization(dtype="float32")
            self.nsp = keras.layers.Dense(2, dtype="float32")
            self.bias = self.add_weight(shape=(VOCAB,), initializer="zeros", name="output_bias")

        def call(self, f, training=False, ops=None):  # ops: the Trainer's choice; this toy uses Keras layers
            ids = f["input_ids"]
            x = self.emb(ids) + self.pos(keras.ops.arange(SEQ))[None]
            flat = keras.ops.reshape(x, (-1, SEQ * hidden))
            h = keras.ops.reshape(self.drop(self.mix(flat), training=training), (-1, SEQ, hidden))
            h = self.norm(self.out(h) + x)
            at = keras.ops.take_along_axis(h, f["masked_lm_positions"][..., None], axis=1)
            # Output tied to the input embeddings, as BERT's; variables read here are autocast to the
            # compute dtype under a mixed policy, so compute there and return float32 logits.
            at = keras.ops.cast(at, self.compute_dtype)
            logits = keras.ops.matmul(at, keras.ops.transpose(self.emb.embeddings)) + self.bias
            return {"mlm_logits": keras.ops.cast(logits, "float32"), "nsp_logits": self.nsp(h[:, 0])}

    return Toy()


def toy_loss(outputs, features, ops=None):
    """Masked-LM + NSP loss as run_pretraining.py computes them; metrics as (total, count)."""
    import tensorflow as tf

    logits = tf.cast(outputs["mlm_logits"], tf.float32)
    labels = features["masked_lm_ids"]
    w = tf.cast(features["masked_lm_weights"], tf.float32)
    per = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    mlm = tf.reduce_sum(per * w) / (tf.reduce_sum(w) + 1e-5)
    nsp_logits = tf.cast(outputs["nsp_logits"], tf.float32)
    nsp_labels = tf.reshape(features["next_sentence_labels"], [-1])
    nsp = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=nsp_labels, logits=nsp_logits))
    correct = tf.cast(tf.equal(tf.argmax(logits, -1), labels), tf.float32)
    nsp_correct = tf.cast(tf.equal(tf.argmax(nsp_logits, -1), nsp_labels), tf.float32)
    return mlm + nsp, {
        "masked_lm_accuracy": (tf.reduce_sum(correct * w), tf.reduce_sum(w)),
        "masked_lm_loss": mlm,
        "next_sentence_accuracy": (tf.reduce_sum(nsp_correct), tf.cast(tf.size(nsp_correct), tf.float32)),
        "next_sentence_loss": nsp,
    }


def weights(model) -> dict[str, np.ndarray]:
    """Trainable weights by position (Keras numbers layer names per process)."""
    return {f"{i:03d}": np.array(v.numpy()) for i, v in enumerate(model.trainable_variables)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=8, help="per rank")
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--save_every", type=int, default=1000)
    p.add_argument("--kill_after", type=int, default=0, help="SIGKILL self right after this step's checkpoint")
    p.add_argument("--kill_in_save", type=int, default=0,
                   help="SIGKILL self in the middle of writing this step's checkpoint")
    p.add_argument("--xla", action="store_true")
    p.add_argument("--fp16_allreduce", action="store_true")
    p.add_argument("--lr", type=float, default=1e-2)
    args = p.parse_args(argv)

    import keras

    from bert_core import distributed, training

    dist = distributed.initialize()
    training.set_precision(args.dtype)
    model = build_model(dropout=args.dropout)
    cfg = training.TrainLoopConfig(output_dir=args.out, num_train_steps=args.steps, dtype=args.dtype,
                                   num_accumulation_steps=args.accum, save_checkpoints_steps=args.save_every,
                                   log_every_steps=1, xla=args.xla, fp16_allreduce=args.fp16_allreduce)
    callbacks = []
    if args.kill_after:
        def kill(trainer, step, row):
            if step == args.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        callbacks.append(kill)
    weights_io = training.KerasWeightsIO()
    if args.kill_in_save:
        class KillingWeightsIO(training.KerasWeightsIO):
            def save(self, model, prefix):
                super().save(model, prefix)  # half the checkpoint is on disk ...
                if prefix.endswith(f"-{args.kill_in_save}"):
                    os.kill(os.getpid(), signal.SIGKILL)  # ... when the process dies
        weights_io = KillingWeightsIO()
    trainer = training.Trainer(model, toy_loss, keras.optimizers.Adam(args.lr), cfg, dist=dist, callbacks=callbacks,
                               weights_io=weights_io)
    ds = make_dataset(make_examples(64), args.batch, dist.rank, dist.size)
    trainer.train(ds)
    np.savez(os.path.join(args.out, f"final_rank{dist.rank}.npz"), **weights(model))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
