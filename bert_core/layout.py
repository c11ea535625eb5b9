"""The contracts between stages, in one place: what one stage writes and the next one reads.

    records      the pretraining tf.train.Example schema: `bert create-data` writes it, the manifest
                 describes it, `bert pretrain` checks and parses it
    file names   every file a stage leaves for another stage, a component or a person
    model dir    a pretrained model as Google's releases lay it out: bert_config.json, vocab.txt and
                 the checkpoints beside them; `bert pretrain` writes it, `bert finetune` and the
                 components read it, and both check their --vocab_file against its vocab.txt

The checkpoints inside a model directory (ckpt-<step>/model.ckpt-<step>, the completion marker) are
the training loop's (bert_core.training); this module only names the files around them. No
TensorFlow at import time: the data workers and the components import this.
"""

from __future__ import annotations

import dataclasses
import os

from bert_core.errors import UserError

# --------------------------------------------------------------------------------------------------
# Pretraining records
# --------------------------------------------------------------------------------------------------
SEQ = "max_seq_length"            # a feature as long as the sequence
PREDICTIONS = "max_predictions_per_seq"  # a feature as long as the masked-LM slots


@dataclasses.dataclass(frozen=True)
class RecordFeature:
    name: str
    dtype: str         # "int64" (an Int64List) or "float32" (a FloatList)
    length: str | int  # SEQ, PREDICTIONS, or a fixed number


#: The features of Google's create_pretraining_data.py, in its order (an OrderedDict there).
PRETRAINING_RECORD = (
    RecordFeature("input_ids", "int64", SEQ),
    RecordFeature("input_mask", "int64", SEQ),
    RecordFeature("segment_ids", "int64", SEQ),
    RecordFeature("masked_lm_positions", "int64", PREDICTIONS),
    RecordFeature("masked_lm_ids", "int64", PREDICTIONS),
    RecordFeature("masked_lm_weights", "float32", PREDICTIONS),
    RecordFeature("next_sentence_labels", "int64", 1),
)
PRETRAINING_FEATURES = tuple(f.name for f in PRETRAINING_RECORD)
FLOAT_FEATURES = frozenset(f.name for f in PRETRAINING_RECORD if f.dtype == "float32")
#: Features holding token ids: each must be below the model's vocab_size.
TOKEN_ID_FEATURES = ("input_ids", "masked_lm_ids")


def record_lengths(max_seq_length: int, max_predictions_per_seq: int) -> dict[str, int]:
    """{feature: number of values} of a record made with these parameters."""
    sizes = {SEQ: max_seq_length, PREDICTIONS: max_predictions_per_seq}
    return {f.name: sizes.get(f.length, f.length) for f in PRETRAINING_RECORD}


def length_flag(name: str) -> str | None:
    """The flag that fixes a feature's length (`--max_seq_length`, ...), None for a fixed length."""
    length = next(f.length for f in PRETRAINING_RECORD if f.name == name)
    return f"--{length}" if isinstance(length, str) else None


def record_format(compression: str, max_seq_length: int, max_predictions_per_seq: int) -> dict:
    """The manifest's `format` entry: what a reader needs to parse the shards."""
    return {"type": "tfrecord", "compression": compression,
            "features": {f.name: f.dtype for f in PRETRAINING_RECORD},
            "shapes": record_lengths(max_seq_length, max_predictions_per_seq)}


def parse_spec(max_seq_length: int, max_predictions_per_seq: int) -> dict:
    """The `tf.io.parse_single_example` spec of a pretraining record."""
    import tensorflow as tf

    dtypes = {"int64": tf.int64, "float32": tf.float32}
    lengths = record_lengths(max_seq_length, max_predictions_per_seq)
    return {f.name: tf.io.FixedLenFeature([lengths[f.name]], dtypes[f.dtype]) for f in PRETRAINING_RECORD}


# --------------------------------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------------------------------
DATA_MANIFEST = "data_manifest.json"   # create-data, beside the shards
SHARD_GLOB = "train-*.tfrecord*"       # the shards (a .gz suffix too, if a user adds one)


def shard_name(index: int, num_shards: int) -> str:
    return f"train-{index:05d}-of-{num_shards:05d}.tfrecord"


CORPUS_SHARD_GLOB = "corpus-*-of-*.txt"          # prepare-corpus: BERT-format text, create-data's input
CORPUS_REPORT_JSON = "corpus_report.json"       # prepare-corpus: kept and dropped (per reason, examples)
CORPUS_REPORT_MARKDOWN = "corpus_report.md"     # the same for people (the pipeline's Markdown artifact)


def corpus_shard_name(index: int, num_shards: int) -> str:
    return f"corpus-{index:05d}-of-{num_shards:05d}.txt"


PRETRAIN_METRICS = "pretrain_metrics.json"  # pretrain: throughput, losses, eval
FINETUNE_METRICS = "finetune_metrics.json"  # finetune: the same for a task
EVAL_RESULTS = "eval_results.txt"           # pretrain and finetune --do_eval, as Google's scripts
EVAL_RESULTS_JSON = "eval_results.json"     # the same numbers for machines
TEST_RESULTS = "test_results.tsv"           # finetune --do_predict on a GLUE/tsv task (its first test split)
EVAL_METRICS = "metrics.json"               # bert evaluate
EVAL_DETAILS = "eval_details.json"          # bert evaluate: confusion matrix, ROC, ... (bert_core.report_data)
RUN_RECORD = "run.json"                     # bert-pipeline run, in the run directory: parameters, lineage
RUN_REPORT = "report.html"                  # bert-pipeline run, in the run directory: every stage's pictures
SAVED_MODEL_DIR = "saved_model"             # the fine-tuning component's --export_dir, inside its Model
SUMMARIES_DIR = "train"                     # pretrain and finetune: TensorBoard's event files (--logdir)
TRAIN_HISTORY = "history.jsonl"             # in SUMMARIES_DIR: one JSON line per logged step (report_data)
HELDOUT_DOCUMENTS = "heldout_documents.txt"  # the corpus step: documents pretraining never sees (the gate's set)


def check_output_dir(output_dir: str) -> None:
    """One UserError line if a stage's --output_dir is an existing file (a directory is made as needed)."""
    from bert_core import storage

    if storage.exists(output_dir) and not storage.isdir(output_dir):
        raise UserError(f"--output_dir={output_dir} is a file; give a directory (new, or one this stage wrote)")


def check_output_file(flag: str, path: str) -> None:
    """One UserError line if a stage's output file (`flag`=path) is an existing directory, or its local
    directory is a file; checked before the work, not when writing after it."""
    from bert_core import storage

    if storage.isdir(path):
        raise UserError(f"{flag}={path} is a directory; give a file name (new, or a file to replace)")
    parent = os.path.dirname(path)
    if not storage.is_remote(path) and parent and os.path.exists(parent) and not os.path.isdir(parent):
        raise UserError(f"{flag}={path}: {parent} is a file, not a directory")


def train_history_path(run_dir: str) -> str:
    """A training run's per-step history: step, loss, learning rate, sequences/s and the loss's metrics
    at each logged step, beside its TensorBoard summaries (bert_core.report_data.read_history)."""
    from bert_core import storage

    return storage.join(run_dir, SUMMARIES_DIR, TRAIN_HISTORY)


def more_test_results(split: str) -> str:
    """A further test split's predictions: MNLI's test_mismatched -> test_results_mismatched.tsv."""
    return f"test_results_{split.split('_', 1)[-1]}.tsv"


#: JSON documents `bert-pipeline artifacts show DIR` renders, in this order.
DOCUMENTS = (DATA_MANIFEST, EVAL_METRICS, PRETRAIN_METRICS, FINETUNE_METRICS, EVAL_RESULTS_JSON)


# --------------------------------------------------------------------------------------------------
# The model directory (Google's releases: bert_config.json, vocab.txt, bert_model.ckpt*)
# --------------------------------------------------------------------------------------------------
BERT_CONFIG = "bert_config.json"
HF_CONFIG = "config.json"  # Hugging Face's name for the same fields
VOCAB = "vocab.txt"
TASK_INFO = "task.json"    # a fine-tuned SavedModel's assets: the task's labels, max_seq_length, casing


def model_config_path(model_dir: str) -> str:
    from bert_core import storage

    return storage.join(model_dir, BERT_CONFIG)


def model_vocab_path(model_dir: str) -> str:
    from bert_core import storage

    return storage.join(model_dir, VOCAB)


def write_model_dir(model_dir: str, bert_config, vocab_file: str | None) -> None:
    """bert_config.json (and a copy of `vocab_file`, if given) in `model_dir`, each written atomically,
    so the checkpoints written there make a self-contained model directory like Google's releases."""
    from bert_core import storage

    storage.makedirs(model_dir)
    storage.write_text(model_config_path(model_dir), bert_config.to_json_string())
    if vocab_file and os.path.normpath(vocab_file) != os.path.normpath(model_vocab_path(model_dir)):
        storage.copy(vocab_file, model_vocab_path(model_dir))


def config_candidates(init_checkpoint: str | None, fallback_dir: str | None = None) -> list[str]:
    """Where a model's config may be found, in order: beside the weights (HF config.json, then
    bert_config.json), in a checkpoint prefix's parent (ckpt-<step>/ in a model directory), then in
    `fallback_dir` (a previous run's output directory)."""
    candidates = []
    if init_checkpoint:
        base, parent = _weights_dirs(init_checkpoint)
        candidates += [os.path.join(base, HF_CONFIG), os.path.join(base, BERT_CONFIG),
                       os.path.join(parent, BERT_CONFIG)]
    if fallback_dir:
        candidates.append(os.path.join(fallback_dir, BERT_CONFIG))
    return candidates


def weights_vocab(init_checkpoint: str) -> str | None:
    """The vocab.txt of the model directory the weights `init_checkpoint` belong to: beside them, or
    in a checkpoint prefix's parent (ckpt-<step>/ in a model directory); None if there is none."""
    from bert_core import storage

    return next((path for path in (os.path.join(d, VOCAB) for d in _weights_dirs(init_checkpoint))
                 if storage.exists(path)), None)


def _weights_dirs(init_checkpoint: str) -> tuple[str, str]:
    """(the directory holding the weights, its parent)."""
    from bert_core import storage

    base = init_checkpoint if storage.isdir(init_checkpoint) else os.path.dirname(init_checkpoint)
    return base, os.path.dirname(base)


def check_start_vocab(vocab_file: str, output_dir: str, init_checkpoint: str | None) -> None:
    """--vocab_file must be the vocab.txt of the weights a run starts from: output_dir's, if it holds a
    checkpoint to resume from, else that of --init_checkpoint's model directory (where either has
    one). One UserError line naming the first line that differs, see `check_same_vocab`."""
    from bert_core import storage
    from bert_core.run_dir import latest_checkpoint

    if storage.isdir(output_dir) and latest_checkpoint(output_dir):
        model_vocab = model_vocab_path(output_dir) if storage.exists(model_vocab_path(output_dir)) else None
    else:
        model_vocab = weights_vocab(init_checkpoint) if init_checkpoint else None
    if model_vocab:
        check_same_vocab(vocab_file, model_vocab)


def check_same_vocab(vocab_file: str, model_vocab: str) -> None:
    """One UserError line if --vocab_file differs (sha256) from `model_vocab`, the vocab.txt the
    weights were made with: it names the first line that differs."""
    import hashlib

    from bert_core import storage

    given, made = storage.read_bytes(vocab_file), storage.read_bytes(model_vocab)
    if given == made:
        return
    a, b = given.decode("utf-8", "replace").splitlines(), made.decode("utf-8", "replace").splitlines()
    line = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    what = (f"line {line + 1} is {a[line]!r} there {b[line]!r}" if line is not None
            else f"{len(a)} lines, {len(b)} there")
    raise UserError(f"--vocab_file={vocab_file} (sha256 {hashlib.sha256(given).hexdigest()[:12]}) is not the vocab "
                    f"the checkpoint was made with, {model_vocab} (sha256 {hashlib.sha256(made).hexdigest()[:12]}): "
                    f"{what}; give --vocab_file={model_vocab}")
