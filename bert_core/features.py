"""`bert extract-features`: per-token encoder outputs as JSON lines, as Google's extract_features.py.

    bert extract-features --input_file=input.txt --output_file=out.jsonl --vocab_file=vocab.txt \
        --bert_config_file=bert_config.json --init_checkpoint=bert_model.ckpt --layers=-1,-2,-3,-4

Input: one example a line; `a ||| b` is a sentence pair. Each line becomes `[CLS] a [SEP] (b [SEP])`,
truncated as the classifier's features (longest first, to max_seq_length). Output: one JSON object a
line, in input order:

    {"linex_index": 0, "features": [
        {"token": "[CLS]", "layers": [{"index": -1, "values": [0.123456, ...]}, {"index": -2, ...}]},
        ...]}

`index` counts the transformer layers as Google's `all_encoder_layers` does: -1 is the last layer's
output, 0 the first layer's (the embeddings are not a layer). Values are rounded to 6 decimals, as
the original writes them. The output file is written atomically.
"""

from __future__ import annotations

import json

import numpy as np

from bert_core import layout, storage
from bert_core.config import FeaturesConfig
from bert_core.errors import UserError, where

SEPARATOR = " ||| "


def read_inputs(path: str) -> list[tuple[str, str | None]]:
    """(text_a, text_b) per non-empty line; `|||` separates a pair."""
    if not storage.exists(path):
        raise UserError(f"{path}: no such file (--input_file)")
    text = storage.read_text(path)
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if "|||" in line:
            parts = [p.strip() for p in line.split("|||")]
            if len(parts) != 2:
                raise UserError(f"{where(path, number)}: expected at most one '|||' (a sentence pair), "
                                f"got {len(parts) - 1}")
            out.append((parts[0], parts[1]))
        else:
            out.append((line, None))
    if not out:
        raise UserError(f"{path}: is empty, expected one input a line")
    return out


def convert_inputs(inputs, tokenizer, max_seq_length: int):
    """tokens per input and the padded arrays input_ids/input_mask/segment_ids [N, max_seq_length]."""
    from bert_core.data.glue import build_inputs

    n = len(inputs)
    input_ids = np.zeros((n, max_seq_length), np.int32)
    input_mask = np.zeros((n, max_seq_length), np.int32)
    segment_ids = np.zeros((n, max_seq_length), np.int32)
    all_tokens = []
    for i, (a, b) in enumerate(inputs):
        tokens, segments = build_inputs(tokenizer.tokenize(a), tokenizer.tokenize(b) if b else None, max_seq_length)
        ids = tokenizer.convert_tokens_to_ids(tokens)
        input_ids[i, :len(ids)] = ids
        input_mask[i, :len(ids)] = 1
        segment_ids[i, :len(segments)] = segments
        all_tokens.append(tokens)
    return all_tokens, {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids}


def load_encoder_weights(model, path: str) -> str:
    """The encoder's weights from a Google checkpoint, our output or HF safetensors (heads ignored)."""
    from bert_core.checkpoints import load_init_checkpoint

    return load_init_checkpoint(model, path)


def extract_features_main(cfg: FeaturesConfig) -> int:
    from bert_core.finetune import resolve_config
    from bert_core.tokenization import FullTokenizer, load_vocab

    layout.check_output_file("--output_file", cfg.output_file)
    vocab = load_vocab(cfg.vocab_file)
    inputs = read_inputs(cfg.input_file)
    bert_config = resolve_config(cfg.model, cfg.bert_config_file, cfg.init_checkpoint, len(vocab))
    if cfg.max_seq_length > bert_config.max_position_embeddings:
        raise UserError(f"--max_seq_length={cfg.max_seq_length} exceeds the model's max_position_embeddings="
                        f"{bert_config.max_position_embeddings}")
    layers = cfg.layer_indexes
    num_layers = bert_config.num_hidden_layers
    bad = [i for i in layers if not -num_layers <= i < num_layers]
    if bad:
        raise UserError(f"--layers: {bad} out of range for a model with {num_layers} layers "
                        f"(use -{num_layers}..{num_layers - 1})")
    tokenizer = FullTokenizer(vocab, cfg.do_lower_case)
    tokens, arrays = convert_inputs(inputs, tokenizer, cfg.max_seq_length)

    import tensorflow as tf

    from bert_core import training
    from bert_core.modeling import BertModel

    training.set_precision("fp32")
    model = BertModel(bert_config)
    model.build()
    if cfg.init_checkpoint:
        print(load_encoder_weights(model, cfg.init_checkpoint), flush=True)
    else:
        print("no --init_checkpoint: the features come from randomly initialised weights", flush=True)

    @tf.function(reduce_retracing=True)
    def forward(features):
        out = model(features, training=False)
        return tf.stack([out["encoder_outputs"][i] for i in layers], axis=0)        # [K, B, S, H]

    with storage.atomic_open(cfg.output_file, "w") as f:
        for start in range(0, len(inputs), cfg.batch_size):
            stop = min(len(inputs), start + cfg.batch_size)
            values = forward({k: tf.constant(v[start:stop]) for k, v in arrays.items()}).numpy()
            for b in range(stop - start):
                idx = start + b
                feats = []
                for pos, token in enumerate(tokens[idx]):
                    feats.append({"token": token, "layers": [
                        {"index": layer, "values": [round(float(x), 6) for x in values[k, b, pos]]}
                        for k, layer in enumerate(layers)]})
                f.write(json.dumps({"linex_index": idx, "features": feats}) + "\n")
    print(f"wrote {len(inputs)} inputs to {cfg.output_file}", flush=True)
    return 0
