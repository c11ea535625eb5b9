"""The pinned held-out masked-LM evaluation set of a registered model, and scoring a model on it.

The gate (bert_core.gate) compares a candidate with the published version on numbers neither
trained on. The set is made once per model name, from documents the pretraining corpus excluded
(`heldout_documents.txt`, which bert_core.data.heldout_task writes beside the held-out task), with
`bert create-data` and fixed parameters, and stored in the registry:

    <registry>/<model>/heldout/<run id>/      train-*.tfrecord + data_manifest.json (marker last)
    <registry>/<model>/heldout.json           which of them is the set (created create-only: of two
                                              runs making it at once, the first pointer wins and the
                                              other run uses that set)

Every later run of the model scores on that same set, whatever its own corpus: a corpus that grows by
appended documents keeps the earlier held-out documents held out (heldout_task draws them in order
with a fixed seed). A model is scored by `bert pretrain --do_eval` with the model directory as
--init_checkpoint, in a child process (one TensorFlow per model), over every record of the set.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import uuid

from bert_core import layout, registry, storage
from bert_core.errors import UserError

#: create-data's parameters for the set (the seed fixed: the set is the same whoever makes it).
SET_PARAMETERS = {"dupe_factor": 2, "random_seed": 4242, "masked_lm_prob": 0.15, "short_seq_prob": 0.1}
EVAL_BATCH_SIZE = 16


def pinned_set(reg: registry.Registry, name: str, heldout_documents: str | None, vocab_file: str,
               do_lower_case: bool, max_seq_length: int, max_predictions_per_seq: int, run_id: str) -> dict:
    """The model's pinned set ({"path", "records", "sha256", ...}), made from `heldout_documents` if the
    registry has none yet."""
    pointer = storage.join(reg.model_dir(name), registry.HELDOUT)
    if storage.exists(pointer):
        return _resolve(reg, name, storage.read_json(pointer))
    if not heldout_documents or not storage.exists(heldout_documents):
        raise UserError(f"{pointer}: {name} has no held-out evaluation set yet, and no held-out documents were "
                        f"given to make one ({heldout_documents or 'none'}; the corpus step writes "
                        f"{layout.HELDOUT_DOCUMENTS} when heldout_fraction > 0)")
    from bert_core.stages import command, run_stage

    target = storage.join(reg.model_dir(name), "heldout", _safe(run_id))
    with tempfile.TemporaryDirectory(prefix="bert-heldout-") as tmp:
        out = os.path.join(tmp, "set")
        config = command("create-data").config(
            input_file=heldout_documents, vocab_file=vocab_file, output_dir=out, do_lower_case=do_lower_case,
            max_seq_length=max_seq_length, max_predictions_per_seq=max_predictions_per_seq, num_shards=1,
            **SET_PARAMETERS)
        if run_stage("create-data", config):
            raise UserError(f"{heldout_documents}: making the held-out evaluation set failed (see above)")
        manifest = storage.read_json(os.path.join(out, layout.DATA_MANIFEST))
        storage.publish_dir(out, target)
    record = {"path": storage.basename(storage.dirname(target)) + "/" + storage.basename(target),
              "records": int(manifest["totals"]["instances"]), "documents_sha256": _sha256(heldout_documents),
              "vocab_sha256": manifest["vocab"]["sha256"], "max_seq_length": max_seq_length,
              "max_predictions_per_seq": max_predictions_per_seq, "do_lower_case": do_lower_case,
              "parameters": SET_PARAMETERS, "made_by": run_id}
    try:
        storage.write_json(pointer, record, exclusive=True)
        print(f"heldout: pinned a new evaluation set of {record['records']} records for {name} ({pointer})", flush=True)
    except storage.AlreadyExists:  # another run pinned one first: use that, drop ours
        storage.remove_dir(target)
        record = storage.read_json(pointer)
    return _resolve(reg, name, record)


def _resolve(reg: registry.Registry, name: str, record: dict) -> dict:
    path = storage.join(reg.model_dir(name), record["path"])
    if not storage.is_complete(path):
        raise UserError(f"{path}: the pinned held-out set is incomplete ({storage.COMPLETE_MARKER} missing)")
    return {**record, "path": path}


def _safe(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:80]
    return keep or uuid.uuid4().hex[:12]


def _sha256(path: str) -> str:
    return hashlib.sha256(storage.read_bytes(path)).hexdigest()


def score(model_dir: str, heldout: dict, vocab_file: str) -> dict[str, float]:
    """Masked-LM (and next-sentence) loss and accuracy of the model in `model_dir` on the pinned set:
    `bert pretrain --do_eval` in a child process, every record (the last partial batch dropped)."""
    from bert_core import children
    from bert_core.stages import command, config_argv

    steps = max(1, heldout["records"] // EVAL_BATCH_SIZE)
    with tempfile.TemporaryDirectory(prefix="bert-heldout-score-") as out:
        config = command("pretrain").config(
            input_file=storage.join(heldout["path"], layout.SHARD_GLOB), output_dir=out, do_eval=True,
            bert_config_file=layout.model_config_path(model_dir), vocab_file=vocab_file,
            init_checkpoint=model_dir, max_seq_length=heldout["max_seq_length"],
            max_predictions_per_seq=heldout["max_predictions_per_seq"], eval_batch_size=EVAL_BATCH_SIZE,
            max_eval_steps=steps, check_records=0)
        cmd = [sys.executable, "-m", "bert_core.cli", "pretrain", *config_argv(config)]
        proc = subprocess.run(children.dying_with_this_process(cmd), capture_output=True, text=True,
                              env={**os.environ, "BERT_EVENTS_FILE": ""})
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"scoring {model_dir} on the held-out set failed: {last}")
        results = json.loads(open(os.path.join(out, layout.EVAL_RESULTS_JSON)).read())
    return {k: float(v) for k, v in results.items()
            if k in ("masked_lm_loss", "masked_lm_accuracy", "next_sentence_loss", "next_sentence_accuracy")
            and math.isfinite(float(v))}
