"""SavedModel export of a fine-tuned classifier or SQuAD model, with a serving signature.

    export_saved_model(model, export_dir, max_seq_length, kind="classifier" | "regression" | "squad",
                       extra_files={"vocab.txt": ..., "bert_config.json": ..., "task.json": ...})

The SavedModel's `serving_default` signature takes

    input_ids, input_mask, segment_ids    int32 [batch, max_seq_length]

(the features `bert finetune` trains on: `[CLS] a [SEP] b [SEP]`, zero-padded; docs/finetuning.md shows
how raw text becomes them) and returns

    classifier   logits [batch, num_labels], probabilities [batch, num_labels] (softmax)
    regression   logits [batch, 1], predictions [batch] (the score)
    squad        start_logits [batch, max_seq_length], end_logits [batch, max_seq_length]

all float32, computed with dropout off. The directory also holds the files a client needs to build
inputs (vocab.txt, bert_config.json, task.json with labels, max_seq_length and do_lower_case).

The directory is written under a temporary name and renamed into place (local paths), so a reader
sees either the previous export or the complete new one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Literal, Mapping

import tensorflow as tf

from bert_core import storage

Kind = Literal["classifier", "regression", "squad"]
SIGNATURE = "serving_default"


class _Serving(tf.Module):
    """Holds the model's variables and the serving function (tf.saved_model tracks both)."""

    def __init__(self, model, max_seq_length: int, kind: Kind):
        super().__init__(name="bert_serving")
        self.model = model
        spec = tf.TensorSpec([None, max_seq_length], tf.int32)

        @tf.function(input_signature=[spec, spec, spec])
        def serve(input_ids, input_mask, segment_ids):
            outputs = model({"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids},
                            training=False)
            if kind == "squad":
                return {"start_logits": tf.cast(outputs["start_logits"], tf.float32),
                        "end_logits": tf.cast(outputs["end_logits"], tf.float32)}
            logits = tf.cast(outputs["logits"], tf.float32)
            if kind == "regression":
                return {"logits": logits, "predictions": logits[:, 0]}
            return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

        self.serve = serve


def export_saved_model(model, export_dir: str, max_seq_length: int, kind: Kind,
                       extra_files: Mapping[str, str | bytes] | None = None) -> str:
    """Write `model` as a SavedModel with the serving signature above; returns export_dir."""
    module = _Serving(model, max_seq_length, kind)
    signatures = {SIGNATURE: module.serve.get_concrete_function()}
    if storage.is_gcs(export_dir):
        tf.saved_model.save(module, export_dir, signatures=signatures)
        target = export_dir
    else:
        export_dir = os.path.abspath(export_dir)
        parent = os.path.dirname(export_dir)
        os.makedirs(parent, exist_ok=True)
        target = os.path.join(parent, f".{os.path.basename(export_dir)}.tmp-{uuid.uuid4().hex[:8]}")
        tf.saved_model.save(module, target, signatures=signatures)
    for name, content in (extra_files or {}).items():
        path = os.path.join(target, name)
        if isinstance(content, bytes):
            storage.write_bytes(path, content)
        else:
            storage.write_text(path, content)
    if target != export_dir:
        old = None
        if os.path.exists(export_dir):
            old = export_dir + f".old-{uuid.uuid4().hex[:8]}"
            os.replace(export_dir, old)
        os.replace(target, export_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    return export_dir
