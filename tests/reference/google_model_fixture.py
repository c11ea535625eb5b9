"""Run Google's original BERT (PyPI bert-tensorflow 1.0.4) to produce parity fixtures.

Runs INSIDE the reference env (scripts/setup_reference_env.sh: TensorFlow 2.15.1 + Keras 2), never
in the project's venv: Google's modeling.py needs tf.compat.v1.layers, which Keras 3 refuses.

  build --config CFG.json --out DIR [--seed N]
      Builds Google's BertModel in graph mode (is_training=False) plus the masked-LM and
      next-sentence outputs with run_pretraining.py's own get_masked_lm_output /
      get_next_sentence_output; fills every variable with random values (biases, gammas and betas
      too, so a swapped or dropped variable shows); adds `global_step` and `<var>/adam_m|adam_v`
      slots as Google's optimizer does; saves DIR/google.ckpt with tf.train.Saver; writes inputs and
      outputs to DIR/fixture.npz.

  run --config CFG.json --ckpt PREFIX --inputs FIXTURE.npz --out OUT.npz
      Builds the same graph, initializes it from PREFIX the way run_pretraining.py does
      (modeling.get_assignment_map_from_checkpoint + tf.train.init_from_checkpoint), fails if any
      graph variable was not in the checkpoint, and writes the outputs for the fixture's inputs.

Output keys: sequence_output [B,S,H], pooled_output [B,H], embedding_output [B,S,H],
layer_<i> [B,S,H], mlm_logits / mlm_log_probs [B,P,V], mlm_loss [], mlm_per_example_loss [B,P],
nsp_logits / nsp_log_probs [B,2], nsp_loss [], nsp_per_example_loss [B]; inputs: input_ids,
input_mask, segment_ids, masked_lm_positions, masked_lm_ids, masked_lm_weights, next_sentence_labels.
"""

from __future__ import annotations

import argparse
import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf2  # noqa: E402
import tf_slim  # noqa: E402

# Google's modeling.py imports tensorflow.contrib.layers for layer_norm; tf-slim carries that code.
sys.modules["tensorflow.contrib"] = types.SimpleNamespace(layers=tf_slim.layers)

from bert import modeling, run_pretraining  # noqa: E402

tf = tf2.compat.v1
INPUT_KEYS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
              "masked_lm_weights", "next_sentence_labels")


def make_inputs(config: modeling.BertConfig, seed: int, batch: int = 3, seq: int = 16, preds: int = 5) -> dict:
    """Random ids with padding of different lengths per row, two segments, masked positions inside
    the real tokens, and padded (weight 0) prediction slots in the last row."""
    rng = np.random.RandomState(seed + 1)
    lengths = [seq, seq - 5, seq // 2]
    ids = np.zeros((batch, seq), np.int32)
    mask = np.zeros((batch, seq), np.int32)
    segments = np.zeros((batch, seq), np.int32)
    positions = np.zeros((batch, preds), np.int32)
    weights = np.zeros((batch, preds), np.float32)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.randint(1, config.vocab_size, size=n)
        mask[b, :n] = 1
        segments[b, n // 2:n] = 1 + (b % (config.type_vocab_size - 1))
        k = preds if b < batch - 1 else preds - 2
        positions[b, :k] = np.sort(rng.choice(np.arange(1, n), size=k, replace=False))
        weights[b, :k] = 1.0
    return {
        "input_ids": ids, "input_mask": mask, "segment_ids": segments,
        "masked_lm_positions": positions,
        "masked_lm_ids": rng.randint(0, config.vocab_size, size=(batch, preds)).astype(np.int32),
        "masked_lm_weights": weights,
        "next_sentence_labels": np.array([0, 1, 1][:batch], np.int32).reshape(batch, 1),
    }


def build_graph(config: modeling.BertConfig, inputs: dict) -> tuple[dict, dict]:
    """Google's model and heads on placeholders; returns (placeholders, fetches)."""
    ph = {k: tf.placeholder(tf.float32 if k == "masked_lm_weights" else tf.int32, v.shape, name=k)
          for k, v in inputs.items()}
    model = modeling.BertModel(config=config, is_training=False, input_ids=ph["input_ids"],
                               input_mask=ph["input_mask"], token_type_ids=ph["segment_ids"],
                               use_one_hot_embeddings=False)
    mlm_loss, mlm_example_loss, mlm_log_probs = run_pretraining.get_masked_lm_output(
        config, model.get_sequence_output(), model.get_embedding_table(), ph["masked_lm_positions"],
        ph["masked_lm_ids"], ph["masked_lm_weights"])
    nsp_loss, nsp_example_loss, nsp_log_probs = run_pretraining.get_next_sentence_output(
        config, model.get_pooled_output(), ph["next_sentence_labels"])
    graph = tf.get_default_graph()
    batch, preds = inputs["masked_lm_positions"].shape
    fetches = {
        "sequence_output": model.get_sequence_output(),
        "pooled_output": model.get_pooled_output(),
        "embedding_output": model.get_embedding_output(),
        # The logits are the BiasAdd that get_*_output feed to log_softmax.
        "mlm_logits": tf.reshape(graph.get_tensor_by_name("cls/predictions/BiasAdd:0"), [batch, preds, -1]),
        "mlm_log_probs": tf.reshape(mlm_log_probs, [batch, preds, -1]),
        "mlm_loss": mlm_loss,
        "mlm_per_example_loss": tf.reshape(mlm_example_loss, [batch, preds]),
        "nsp_logits": graph.get_tensor_by_name("cls/seq_relationship/BiasAdd:0"),
        "nsp_log_probs": nsp_log_probs,
        "nsp_loss": nsp_loss,
        "nsp_per_example_loss": nsp_example_loss,
    }
    for i, layer in enumerate(model.get_all_encoder_layers()):
        fetches[f"layer_{i}"] = layer
    return ph, fetches


def randomize(sess, variables, seed: int) -> None:
    """Every weight random: kernels/embeddings N(0, 0.05), gammas 1 + N(0, 0.1), biases/betas N(0, 0.1)."""
    rng = np.random.RandomState(seed)
    for var in variables:
        shape = var.shape.as_list()
        name = var.op.name
        if name.endswith("gamma"):
            value = 1.0 + 0.1 * rng.randn(*shape)
        elif name.endswith(("beta", "bias")):
            value = 0.1 * rng.randn(*shape)
        else:
            value = 0.05 * rng.randn(*shape)
        var.load(value.astype(np.float32), sess)


def cmd_build(args) -> None:
    config = modeling.BertConfig.from_json_file(args.config)
    inputs = make_inputs(config, args.seed)
    with tf.Graph().as_default():
        ph, fetches = build_graph(config, inputs)
        model_vars = tf.global_variables()
        # What Google's training leaves in a checkpoint besides the weights; a load must skip them.
        tf.train.get_or_create_global_step()
        for var in model_vars:
            for slot in ("adam_m", "adam_v"):
                tf.get_variable(f"{var.op.name}/{slot}", shape=var.shape, dtype=tf.float32,
                                initializer=tf.zeros_initializer(), trainable=False)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            randomize(sess, model_vars, args.seed)
            os.makedirs(args.out, exist_ok=True)
            tf.train.Saver().save(sess, os.path.join(args.out, "google.ckpt"), write_meta_graph=False)
            outputs = sess.run(fetches, {ph[k]: v for k, v in inputs.items()})
    np.savez(os.path.join(args.out, "fixture.npz"), **inputs, **outputs,
             variable_names=np.array(sorted(v.op.name for v in model_vars)))


def cmd_run(args) -> None:
    config = modeling.BertConfig.from_json_file(args.config)
    data = np.load(args.inputs)
    inputs = {k: data[k] for k in INPUT_KEYS}
    with tf.Graph().as_default():
        ph, fetches = build_graph(config, inputs)
        tvars = tf.trainable_variables()
        assignment_map, initialized = modeling.get_assignment_map_from_checkpoint(tvars, args.ckpt)
        tf.train.init_from_checkpoint(args.ckpt, assignment_map)
        not_initialized = sorted(v.op.name for v in tvars if v.name not in initialized)
        if not_initialized:
            sys.exit(f"variables not found in {args.ckpt}: {not_initialized}")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            outputs = sess.run(fetches, {ph[k]: v for k, v in inputs.items()})
    checkpoint_names = sorted(tf.train.load_checkpoint(args.ckpt).get_variable_to_shape_map())
    np.savez(args.out, **outputs, checkpoint_names=np.array(checkpoint_names),
             variable_names=np.array(sorted(v.op.name for v in tvars)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--config", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--seed", type=int, default=1234)
    r = sub.add_parser("run")
    r.add_argument("--config", required=True)
    r.add_argument("--ckpt", required=True)
    r.add_argument("--inputs", required=True)
    r.add_argument("--out", required=True)
    args = parser.parse_args()
    tf.disable_eager_execution()
    {"build": cmd_build, "run": cmd_run}[args.command](args)


if __name__ == "__main__":
    main()
