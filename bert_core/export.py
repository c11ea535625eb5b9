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

The export is a directory of the run, published as every multi-file artifact is (storage.atomic_dir):
built in a local temporary directory (tf.saved_model.save never writes to object storage), then
renamed into place locally or uploaded to gs:// / s3:// with storage.COMPLETE_MARKER last. The marker,
listing saved_model.pb and task.json, is how an export of ours is recognised: `check_export_dir`
refuses to replace anything else (a file, a non-empty directory that is not such an export, the
run's own --output_dir, a directory holding it, a place inside it other than saved_model/), and a
reader sees the previous export or the new one whole.
"""

from __future__ import annotations

import os
from typing import Literal, Mapping

import tensorflow as tf

from bert_core import layout, storage
from bert_core.errors import UserError

Kind = Literal["classifier", "regression", "squad"]
SIGNATURE = "serving_default"
_SAVED_MODEL_PB = "saved_model.pb"  # tf.saved_model.save's graph file, at the export's top


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
                       extra_files: Mapping[str, str | bytes] | None = None, output_dir: str | None = None) -> str:
    """Write `model` as a SavedModel with the serving signature above; returns export_dir.
    `extra_files` must include layout.TASK_INFO (what marks the export as ours); `output_dir` is the
    run's, checked as `check_export_dir` does."""
    if layout.TASK_INFO not in (extra_files or {}):
        raise ValueError(f"export_saved_model: extra_files needs {layout.TASK_INFO}")
    check_export_dir(export_dir, output_dir)
    module = _Serving(model, max_seq_length, kind)
    signatures = {SIGNATURE: module.serve.get_concrete_function()}
    with storage.atomic_dir(export_dir) as tmp:
        tf.saved_model.save(module, tmp, signatures=signatures)
        for name, content in extra_files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(content if isinstance(content, bytes) else content.encode("utf-8"))
    return export_dir


def is_our_export(path: str) -> bool:
    """True if `path` is a complete export written by `export_saved_model`: its marker lists
    saved_model.pb and task.json."""
    marker = storage.join(path, storage.COMPLETE_MARKER)
    if not storage.exists(marker):
        return False
    try:
        listed = {f["path"] for f in storage.read_json(marker)["files"]}
    except (UserError, KeyError, TypeError):
        return False
    return {_SAVED_MODEL_PB, layout.TASK_INFO} <= listed


def check_export_dir(export_dir: str, output_dir: str | None = None) -> None:
    """One UserError line unless `export_dir` is free to be (re)written by an export: missing, an
    empty directory, or an export of ours. It may not be `output_dir`, hold it, or lie inside it
    anywhere but at output_dir/saved_model (layout.SAVED_MODEL_DIR), where the run writes nothing else."""
    storage.check_scheme(export_dir)
    if output_dir:
        _check_apart_from_output(export_dir, output_dir)
    if not storage.exists(export_dir) or is_our_export(export_dir):
        return
    if not storage.isdir(export_dir):
        raise UserError(f"--export_dir={export_dir} is a file; the export is a directory: give a new path")
    if storage.list_files(export_dir):
        raise UserError(f"--export_dir={export_dir} is a non-empty directory that is not a SavedModel exported "
                        f"by bert finetune (no {storage.COMPLETE_MARKER} listing {layout.TASK_INFO}); it would "
                        f"be replaced: give a new or empty directory")


def _check_apart_from_output(export_dir: str, output_dir: str) -> None:
    def canonical(path: str) -> str:
        return path.rstrip("/") if storage.is_remote(path) else os.path.realpath(path)

    export, output = canonical(export_dir), canonical(output_dir)
    if storage.is_remote(export) != storage.is_remote(output):
        return
    sep = "/" if storage.is_remote(export) else os.sep
    own = storage.join(output_dir, layout.SAVED_MODEL_DIR)
    if export == output:
        raise UserError(f"--export_dir={export_dir} is --output_dir: an export would replace the run's "
                        f"checkpoints and results; give --export_dir={own}")
    if output.startswith(export + sep):
        raise UserError(f"--export_dir={export_dir} holds --output_dir={output_dir}: an export would delete "
                        f"the run; give --export_dir={own}")
    if export.startswith(output + sep) and export != canonical(own):
        raise UserError(f"--export_dir={export_dir} is inside --output_dir={output_dir}, whose names belong "
                        f"to the run; give --export_dir={own} or a directory outside it")
