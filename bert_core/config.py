"""Configuration: one pydantic model per stage, and the model's own config.

Field names are the flag names of Google's BERT scripts; the `bert` command generates its flags from
these models, and the KFP components pass the same fields. Every constraint lives here, once.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from bert_core.choices import OptimizerType, Precision


class StageConfig(BaseModel):
    """Base of every stage's config: unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def describe_validation_error(err: pydantic.ValidationError, source: str | None = None) -> str:
    """One line naming each bad field and what was expected, e.g. `--max_seq_length: ...`."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        field = f"--{loc}" if source is None else f"{source}: {loc}"
        if loc:
            got = e.get("input")
            parts.append(f"{field}: {msg} (got {got!r})" if got is not None and e["type"] != "missing"
                         else f"{field}: {msg}")
        else:
            parts.append(f"{source + ': ' if source else ''}{msg}")
    return "; ".join(parts)


def parse_bool(text) -> bool:
    """A boolean as both command lines spell it: true/false, t/f, yes/no, y/n, on/off, 1/0 (any case);
    ValueError otherwise."""
    low = str(text).strip().lower()
    if low in ("1", "true", "t", "yes", "y", "on"):
        return True
    if low in ("0", "false", "f", "no", "n", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


# --------------------------------------------------------------------------------------------------
# The model: BertConfig (Google's bert_config.json, unchanged; Hugging Face's config.json too)
# --------------------------------------------------------------------------------------------------
# hidden_act spellings. "gelu" is the exact, erf-based GELU (Google's original release and Hugging
# Face's "gelu"); "gelu_new" / "gelu_tanh" / "gelu_pytorch_tanh" are the tanh approximation, which is
# what the `gelu` of PyPI bert-tensorflow 1.0.4's modeling.py computes (see docs/model.md).
HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_tanh", "gelu_pytorch_tanh", "relu", "tanh", "linear")


class BertConfig(BaseModel):
    """The encoder's shape and regularization, field for field Google's `bert_config.json`.

    Shape fields are required (they fix the checkpoint's shapes); the others default as Google's
    `BertConfig` constructor does. Extra keys (Hugging Face's `architectures`, `model_type`,
    `pad_token_id`, ...) are ignored, so HF's config.json reads as is.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    vocab_size: int = Field(gt=0, description="Rows of the word-embedding table")
    hidden_size: int = Field(gt=0, description="Width H of every layer")
    num_hidden_layers: int = Field(gt=0, description="Transformer layers L")
    num_attention_heads: int = Field(gt=0, description="Attention heads A; H must be divisible by A")
    intermediate_size: int = Field(gt=0, description="Width of the feed-forward layer (4H in Google's models)")
    hidden_act: str = Field("gelu", description="Feed-forward activation: " + ", ".join(HIDDEN_ACTS))
    hidden_dropout_prob: float = Field(0.1, ge=0, lt=1, description="Dropout after embeddings and sublayers")
    attention_probs_dropout_prob: float = Field(0.1, ge=0, lt=1, description="Dropout on attention probabilities")
    max_position_embeddings: int = Field(gt=0, description="Longest sequence the position table covers")
    type_vocab_size: int = Field(gt=0, description="Number of segment (token type) ids")
    initializer_range: float = Field(0.02, gt=0, description="Stddev of the truncated-normal initializer")
    layer_norm_eps: float = Field(1e-12, gt=0, description="LayerNorm epsilon (Google: 1e-12; HF's key)")
    position_embedding_type: Literal["absolute"] = Field(
        "absolute", description="Only Google's learned absolute positions (HF's key)")

    @pydantic.field_validator("hidden_act")
    @classmethod
    def _check_act(cls, value: str) -> str:
        if value not in HIDDEN_ACTS:
            raise ValueError(f"unknown activation, expected one of {', '.join(HIDDEN_ACTS)}")
        return value

    @model_validator(mode="after")
    def _check_heads(self) -> "BertConfig":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        return self

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, values: dict, source: str = "bert_config") -> "BertConfig":
        from bert_core.errors import UserError

        if not isinstance(values, dict):
            raise UserError(f"{source}: expected a JSON object of BERT config fields, got {type(values).__name__}")
        try:
            return cls(**values)
        except pydantic.ValidationError as err:
            raise UserError(describe_validation_error(err, source)) from None

    @classmethod
    def from_json_file(cls, path: str) -> "BertConfig":
        """Read Google's bert_config.json (or HF's config.json); a bad file is one UserError line."""
        from bert_core import storage

        return cls.from_dict(storage.read_json(path), source=str(path))

    def to_dict(self) -> dict:
        """Google's eleven keys (plus layer_norm_eps only when it is not Google's 1e-12)."""
        out = self.model_dump(exclude={"layer_norm_eps", "position_embedding_type"})
        if self.layer_norm_eps != 1e-12:
            out["layer_norm_eps"] = self.layer_norm_eps
        return out

    def to_json_string(self) -> str:
        import json

        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def _known_name(kind: str, name: str, lookup, names) -> str:
    """`name` if lookup(name) accepts it, else the field's one ValueError listing `names()` (a field
    check: it comes before any check across fields)."""
    from bert_core.errors import UserError

    try:
        lookup(name)
    except UserError:
        raise ValueError(f"unknown {kind}, expected one of {', '.join(names())}") from None
    return name


def _known_model(name: str) -> str:
    """A --model name is one of bert_core.presets'."""
    from bert_core import presets

    return _known_name("model", name, presets.preset_config, presets.preset_names)


#: `--model`: a named shape (bert_core.presets), checked with the other fields.
ModelName = Annotated[str, AfterValidator(_known_model)]


# --------------------------------------------------------------------------------------------------
# Stage 0: vocabulary
# --------------------------------------------------------------------------------------------------
class VocabConfig(StageConfig):
    input_file: str = Field(description="Corpus: comma-separated files or globs, one sentence a line")
    output_file: str = Field(description="Where to write vocab.txt")
    vocab_size: int = Field(30522, gt=5, description="Vocabulary size including the special tokens")
    do_lower_case: bool = Field(True, description="Lower-case and strip accents (uncased model)")
    min_frequency: int = Field(2, ge=1, description="Minimum count for a merged piece")
    limit_alphabet: int = Field(1000, ge=1, description="Most frequent characters kept as single pieces")
    on_bad_utf8: Literal["fail", "replace"] = Field(
        "fail", description="Invalid UTF-8 in the input: stop naming file:line, or replace with U+FFFD")


# --------------------------------------------------------------------------------------------------
# Stage 0: corpus preparation
# --------------------------------------------------------------------------------------------------
class PrepareCorpusConfig(StageConfig):
    input_file: str = Field(description="Inputs: comma-separated files or globs (local, gs://, s3://); MediaWiki "
                                        "XML dumps, JSON lines, plain text or BERT format, gzip/bz2/zstd or not")
    output_dir: str = Field(description="Directory for corpus-NNNNN-of-NNNNN.txt (one sentence a line, a blank "
                                        "line between documents) and corpus_report.{json,md}")
    corpus_format: Literal["auto", "wiki", "jsonl", "text", "bert"] = Field(
        "auto", description="wiki (MediaWiki XML), jsonl, text (a paragraph a line), bert (a sentence a line), "
                            "or auto: detected per file")
    text_field: str = Field("text", min_length=1, description="jsonl: the field holding a document's text")
    wiki_index: str | None = Field(None, description="A multistream dump's index (default: the "
                                                     "-multistream-index.txt.bz2 beside it, if any)")
    num_shards: int = Field(1, ge=1, description="Output files; documents go to one by the part of the input "
                                                    "they were read in (docs/data.md)")
    num_workers: int = Field(1, ge=1, description="Worker processes on this host")
    normalization: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normalisation of the text")
    min_sentences: int = Field(2, ge=1, description="Drop documents with fewer sentences")
    min_chars: int = Field(100, ge=0, description="Drop documents with fewer characters")
    dedup: bool = Field(True, description="Drop exact duplicate documents")
    on_bad_utf8: Literal["fail", "replace"] = Field(
        "fail", description="Invalid UTF-8 in the input: stop naming file:line, or replace with U+FFFD")


# --------------------------------------------------------------------------------------------------
# Stage 1: pretraining data
# --------------------------------------------------------------------------------------------------
class DataConfig(StageConfig):
    input_file: str = Field(description="Corpus: comma-separated files or globs; one sentence a line, "
                                        "a blank line between documents")
    output_dir: str | None = Field(None, description="Directory for the shards and data_manifest.json")
    output_file: str | None = Field(None, description="A single output TFRecord file (Google's flag); "
                                                      "use --output_dir for shards")
    vocab_file: str = Field(description="WordPiece vocab.txt, one token a line")
    do_lower_case: bool = Field(True, description="Lower-case and strip accents (uncased model)")
    do_whole_word_mask: bool = Field(False, description="Mask whole words (all their ## pieces together)")
    max_seq_length: int = Field(128, ge=8, description="Maximum sequence length in tokens")
    max_predictions_per_seq: int = Field(20, ge=1, description="Maximum masked LM predictions per sequence")
    masked_lm_prob: float = Field(0.15, gt=0, lt=1, description="Fraction of tokens masked")
    random_seed: int = Field(12345, description="Seed for data generation")
    dupe_factor: int = Field(10, ge=1, description="Times to duplicate the input with different masks")
    short_seq_prob: float = Field(0.1, ge=0, le=1, description="Probability of a shorter-than-maximum sequence")
    num_shards: int = Field(1, ge=1, description="Number of output shards (train-00000-of-NNNNN.tfrecord)")
    num_workers: int = Field(1, ge=1, description="Worker processes on this host")
    compression: Literal["none", "gzip"] = Field("none", description="TFRecord compression")
    on_bad_utf8: Literal["fail", "replace"] = Field(
        "fail", description="Invalid UTF-8 in the input: stop naming file:line, or replace with U+FFFD")
    random_doc_pool_size: int = Field(
        1000, ge=1, description="Documents kept for drawing random next segments (bounds memory)")
    shuffle_buffer_size: int = Field(
        10000, ge=1, description="Instances shuffled together before writing (bounds memory)")

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if (self.output_dir is None) == (self.output_file is None):
            raise ValueError("give exactly one of --output_dir or --output_file")
        if self.max_predictions_per_seq < self.masked_lm_prob * self.max_seq_length:
            raise ValueError(
                f"--max_predictions_per_seq={self.max_predictions_per_seq} is below masked_lm_prob * "
                f"max_seq_length = {self.masked_lm_prob * self.max_seq_length:g}; raise it to at least "
                f"{int(self.masked_lm_prob * self.max_seq_length + 0.999999)}")
        if self.output_file is not None and self.num_shards != 1:
            raise ValueError("--output_file writes one file; use --output_dir with --num_shards")
        return self


# --------------------------------------------------------------------------------------------------
# Stage 2: pretraining
# --------------------------------------------------------------------------------------------------
class PretrainConfig(StageConfig):
    """`bert pretrain`: the flags of Google's run_pretraining.py plus precision, XLA, accumulation and
    Horovod options. Under horovodrun/mpirun, --train_batch_size is per rank (as the seed's)."""

    input_file: str | None = Field(None, description="Pretraining TFRecords: comma-separated files or globs "
                                                     "(plain or GZIP); each Horovod rank reads its own files")
    output_dir: str = Field(description="Checkpoints, summaries, eval_results.txt and pretrain_metrics.json; "
                                        "a run resumes from the latest checkpoint here")
    bert_config_file: str | None = Field(None, description="Google's bert_config.json (or give --model)")
    model: ModelName | None = Field(None, description="A named shape instead of --bert_config_file, e.g. bert-mini, "
                                                "bert-base, bert-L4-H256")
    vocab_file: str | None = Field(None, description="vocab.txt; sets a --model preset's vocab_size and checks "
                                                     "the data's token ids (default: the data_manifest.json's)")
    init_checkpoint: str | None = Field(None, description="Initial weights: a Google/our checkpoint (e.g. phase 1 "
                                                          "for phase 2) or Hugging Face .safetensors")
    max_seq_length: int = Field(128, ge=2, description="Sequence length of the records")
    max_predictions_per_seq: int = Field(20, ge=1, description="Masked LM predictions per sequence in the records")
    train_batch_size: int = Field(32, ge=1, description="Batch size per rank per micro-batch")
    eval_batch_size: int = Field(8, ge=1, description="Eval batch size per rank")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate")
    num_train_steps: int = Field(100000, ge=0, description="Optimizer updates")
    num_warmup_steps: int = Field(10000, ge=0, description="Linear warmup updates")
    save_checkpoints_steps: int = Field(1000, ge=1, description="Write a checkpoint every N updates")
    max_eval_steps: int = Field(100, ge=1, description="Maximum eval batches (per rank)")
    do_train: bool = Field(False, description="Train")
    do_eval: bool = Field(False, description="Evaluate (after training, or the latest checkpoint)")
    optimizer_type: OptimizerType = Field(
        "adam", description="AdamW, LAMB, NAdam (AdamW with Nesterov) or NLAMB")
    dtype: Precision = Field(
        "fp32", description="fp32, fp16 (dynamic loss scaling) or bf16 mixed precision")
    xla: bool = Field(False, description="Compile the forward/backward pass with XLA")
    num_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per update (one allreduce per update)")
    keep_checkpoints: int = Field(5, ge=1, description="Checkpoints kept (the newest)")
    scale_lr_by_workers: bool = Field(False, description="Multiply --learning_rate by the number of ranks")
    fp16_allreduce: bool = Field(False, description="Send gradients as float16 in the allreduce")
    log_every_steps: int = Field(100, ge=1, description="Progress line and summaries every N updates")
    random_seed: int = Field(12345, description="Seed for initialisation, dropout and shuffling")
    shuffle_buffer_size: int = Field(100, ge=1, description="Records shuffled together (per rank)")
    check_records: int = Field(1000, ge=0, description="Records per input file checked before training (token "
                                                       "ids < vocab_size, lengths); 0 skips the check")
    skip_damaged_records: bool = Field(False, description="At a damaged record (truncated, bad checksum) warn and go "
                                                          "on with the next file instead of stopping")

    @model_validator(mode="after")
    def _check(self) -> "PretrainConfig":
        if not (self.do_train or self.do_eval):
            raise ValueError("at least one of --do_train or --do_eval must be true")
        if self.input_file is None:
            raise ValueError("--input_file is required with --do_train or --do_eval")
        if (self.model is None) == (self.bert_config_file is None):
            raise ValueError("give exactly one of --bert_config_file or --model")
        if self.max_predictions_per_seq > self.max_seq_length:
            raise ValueError(f"--max_predictions_per_seq={self.max_predictions_per_seq} exceeds "
                             f"--max_seq_length={self.max_seq_length}")
        if self.do_train and self.num_warmup_steps > self.num_train_steps:
            raise ValueError(f"--num_warmup_steps={self.num_warmup_steps} exceeds "
                             f"--num_train_steps={self.num_train_steps}")
        return self


# --------------------------------------------------------------------------------------------------
# Stage 4: evaluation (and the task fields fine-tuning shares)
# --------------------------------------------------------------------------------------------------
class TsvTaskFields(BaseModel):
    """Fields of the generic `--task_name=tsv` task; FinetuneConfig and EvalConfig both take them."""

    text_a_column: str = Field("0", description="tsv task: column of the first text (header name or "
                                                "0-based index)")
    text_b_column: str | None = Field(None, description="tsv task: column of the second text, if pairs")
    label_column: str = Field("1", description="tsv task: column of the label (header name or 0-based index)")
    has_header: bool = Field(True, description="tsv task: the files start with a header row")
    labels: str | None = Field(None, description="tsv task: comma-separated label list (default: the "
                                                 "sorted labels of train.tsv)")
    regression: bool = Field(False, description="tsv task: the label is a number (regression)")
    xnli_language: str = Field("zh", description="xnli task: the language to train and evaluate on")

    def task_options(self, task_name: str) -> dict:
        """Keyword arguments of bert_core.data.glue.get_task for `task_name`."""
        name = task_name.lower()
        if name == "tsv":
            labels = [x.strip() for x in self.labels.split(",") if x.strip()] if self.labels else None
            return {"text_a_column": self.text_a_column, "text_b_column": self.text_b_column,
                    "label_column": self.label_column, "has_header": self.has_header,
                    "labels": labels, "regression": self.regression}
        if name == "xnli":
            return {"language": self.xnli_language}
        return {}


SQUAD_TASKS = ("squad", "squad2", "squad_v2")


def _known_task(name: str, info: pydantic.ValidationInfo) -> str:
    """A --task_name is SQuAD's, tsv, a GLUE task bert_core.data.glue knows (with its aliases), one an
    installed package offers (bert_core.tasks' entry points), or, with --task_module, any name (the
    module is imported when the stage runs, which checks it registers the name)."""
    from bert_core import tasks
    from bert_core.data import glue

    if name.lower() in SQUAD_TASKS + ("tsv",) or info.data.get("task_module"):
        return name

    def lookup(task: str) -> None:
        if task.lower() not in tasks.entry_point_names():  # scanned only for a name GLUE does not know
            glue.get_task(task)

    return _known_name("task", name, lookup, lambda: glue.TASK_NAMES + SQUAD_TASKS + tasks.entry_point_names()
                       + ("or a task of --task_module",))


#: `--task_name`: a GLUE task, tsv, squad, or a registered task (checked with the other fields).
TaskName = Annotated[str, AfterValidator(_known_task)]


class TaskModuleField(BaseModel):
    """`--task_module` (bert_core.tasks): before --task_name, which it may name (FinetuneConfig, EvalConfig)."""

    task_module: str | None = Field(None, description="Your own tasks: a .py file, module name or gs:// / s3:// "
                                                      "file that registers DataProcessors "
                                                      "(bert_core.tasks.register); --task_name picks one")


class EvalConfig(TsvTaskFields, TaskModuleField, StageConfig):
    task_name: TaskName = Field(description="squad, or a GLUE task: cola, sst-2, mrpc, sts-b, qqp, mnli, qnli, "
                                       "rte, wnli, xnli; or tsv (your own columns); or a task of --task_module")
    output_dir: str = Field(description="Directory for metrics.json")
    # SQuAD
    predict_file: str | None = Field(None, description="squad: the dataset JSON with the gold answers "
                                                       "(dev-v1.1.json, dev-v2.0.json)")
    prediction_json: str | None = Field(None, description="squad: predictions.json written by predict")
    null_odds_json: str | None = Field(None, description="squad 2.0: null_odds.json, for the best "
                                                         "null threshold")
    version_2_with_negative: bool = Field(False, description="squad: SQuAD 2.0 (questions may have no "
                                                             "answer)")
    na_prob_thresh: float = Field(1.0, description="squad 2.0: predict no answer when the null odds "
                                                   "exceed this (the official script's --na-prob-thresh)")
    # GLUE and tsv
    data_dir: str | None = Field(None, description="GLUE/tsv: the task's data directory with the gold dev TSV")
    predictions_file: str | None = Field(None, description="GLUE/tsv: test_results.tsv (class probabilities, "
                                                           "one line per example) or one label/value a line")
    eval_split: str | None = Field(None, description="GLUE/tsv: the gold split (default dev; MNLI "
                                                     "dev_matched, or dev_mismatched)")

    @model_validator(mode="after")
    def _check(self) -> "EvalConfig":
        if self.task_name.lower() in SQUAD_TASKS:
            missing = [f"--{n}" for n in ("predict_file", "prediction_json") if not getattr(self, n)]
        else:
            missing = [f"--{n}" for n in ("data_dir", "predictions_file") if not getattr(self, n)]
        if missing:
            raise ValueError(f"task {self.task_name} needs {' and '.join(missing)}")
        return self


# --------------------------------------------------------------------------------------------------
# Stage 3: fine-tuning (and feature extraction)
# --------------------------------------------------------------------------------------------------
class FinetuneConfig(TsvTaskFields, TaskModuleField, StageConfig):
    """`bert finetune`: the flags of Google's run_classifier.py and run_squad.py, plus precision, XLA,
    accumulation and export. Under horovodrun/mpirun the batch sizes are per rank."""

    task_name: TaskName = Field(description="A GLUE task (cola, sst-2, mrpc, sts-b, qqp, mnli, qnli, rte, wnli, "
                                       "xnli), tsv (your own columns), squad (1.1; 2.0 with "
                                       "--version_2_with_negative), or a task of --task_module")
    output_dir: str = Field(description="Checkpoints, eval_results.txt/json, test_results.tsv or the SQuAD "
                                        "predictions; a run resumes from the latest checkpoint here")
    data_dir: str | None = Field(None, description="GLUE/tsv: the task's directory of TSV files")
    train_file: str | None = Field(None, description="squad: training JSON (train-v1.1.json, train-v2.0.json)")
    predict_file: str | None = Field(None, description="squad: JSON to predict (and, with --do_eval, to score)")
    vocab_file: str = Field(description="WordPiece vocab.txt the model was trained with")
    bert_config_file: str | None = Field(None, description="Google's bert_config.json or HF's config.json "
                                                           "(or give --model; default: the config.json "
                                                           "next to a Hugging Face --init_checkpoint)")
    model: ModelName | None = Field(None, description="A named shape instead of --bert_config_file, e.g. bert-base")
    init_checkpoint: str | None = Field(None, description="Initial weights: a Google checkpoint, our pretraining "
                                                          "output dir or prefix, or HF .safetensors (file or dir)")
    do_lower_case: bool = Field(True, description="Lower-case and strip accents (uncased models)")
    max_seq_length: int = Field(128, ge=3, description="Maximum sequence length in WordPieces")
    do_train: bool = Field(False, description="Fine-tune on the train split / --train_file")
    do_eval: bool = Field(False, description="Evaluate on the dev split(s) / --predict_file")
    do_predict: bool = Field(False, description="Predict the test split(s) / --predict_file")
    train_batch_size: int = Field(32, ge=1, description="Training batch size (per rank, per micro-batch)")
    eval_batch_size: int = Field(8, ge=1, description="Eval batch size")
    predict_batch_size: int = Field(8, ge=1, description="Predict batch size")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW)")
    num_train_epochs: float = Field(3.0, gt=0, description="Epochs over the training data")
    warmup_proportion: float = Field(0.1, ge=0, le=1, description="Fraction of the updates with linear warmup")
    weight_decay_rate: float = Field(0.01, ge=0, description="Decoupled weight decay (not on LayerNorm, biases)")
    save_checkpoints_steps: int = Field(1000, ge=1, description="Write a checkpoint every N updates")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept (the newest)")
    log_every_steps: int = Field(50, ge=1, description="Progress line every N updates")
    # SQuAD
    doc_stride: int = Field(128, ge=1, description="squad: stride between context windows, in tokens")
    max_query_length: int = Field(64, ge=1, description="squad: question tokens kept")
    max_answer_length: int = Field(30, ge=1, description="squad: longest answer, in tokens")
    n_best_size: int = Field(20, ge=1, description="squad: candidates in nbest_predictions.json")
    version_2_with_negative: bool = Field(False, description="squad: SQuAD 2.0 (questions may have no answer)")
    null_score_diff_threshold: float = Field(0.0, description="squad 2.0: answer \"\" when null score minus "
                                                              "best span score exceeds this")
    # Ours
    optimizer_type: OptimizerType = Field(
        "adam", description="AdamW (Google's), LAMB, NAdam or NLAMB")
    dtype: Precision = Field("fp32", description="fp32, fp16 or bf16 mixed precision")
    xla: bool = Field(False, description="Compile the forward/backward pass with XLA")
    num_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per update")
    seed: int = Field(12345, description="Seed for the head's initialisation, dropout and shuffling")
    export_dir: str | None = Field(None, description="Write a SavedModel with a serving signature here "
                                                     "(after training, or from the latest checkpoint)")

    @property
    def is_squad(self) -> bool:
        return self.task_name.lower() in SQUAD_TASKS

    @model_validator(mode="after")
    def _check(self) -> "FinetuneConfig":
        if not (self.do_train or self.do_eval or self.do_predict or self.export_dir):
            raise ValueError("at least one of --do_train, --do_eval, --do_predict or --export_dir is needed")
        if self.model is not None and self.bert_config_file is not None:
            raise ValueError("give only one of --bert_config_file or --model")
        if self.is_squad:
            if self.do_train and not self.train_file:
                raise ValueError("task squad: --do_train needs --train_file")
            if (self.do_eval or self.do_predict) and not self.predict_file:
                raise ValueError("task squad: --do_eval/--do_predict need --predict_file")
            if self.max_seq_length <= self.max_query_length + 3:
                raise ValueError(f"--max_seq_length={self.max_seq_length} must exceed --max_query_length + 3 "
                                 f"= {self.max_query_length + 3}")
        elif (self.do_train or self.do_eval or self.do_predict) and not self.data_dir:
            raise ValueError(f"task {self.task_name} needs --data_dir")
        return self


class FeaturesConfig(StageConfig):
    """`bert extract-features`: the flags of Google's extract_features.py."""

    input_file: str = Field(description="Text, one input a line; 'a ||| b' is a sentence pair")
    output_file: str = Field(description="JSON lines: one object per input with each token's layer values")
    vocab_file: str = Field(description="WordPiece vocab.txt")
    bert_config_file: str | None = Field(None, description="bert_config.json / HF config.json (or --model)")
    model: ModelName | None = Field(None, description="A named shape instead of --bert_config_file")
    init_checkpoint: str | None = Field(None, description="Weights: Google checkpoint, our output, or HF "
                                                          "safetensors (file or dir)")
    layers: str = Field("-1,-2,-3,-4", description="Comma-separated layer indexes (-1 is the last layer)")
    max_seq_length: int = Field(128, ge=3, description="Maximum sequence length in WordPieces")
    batch_size: int = Field(32, ge=1, description="Inputs per forward pass")
    do_lower_case: bool = Field(True, description="Lower-case and strip accents (uncased models)")

    @model_validator(mode="after")
    def _check(self) -> "FeaturesConfig":
        if self.model is not None and self.bert_config_file is not None:
            raise ValueError("give only one of --bert_config_file or --model")
        try:
            idx = [int(x) for x in self.layers.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--layers: expected comma-separated integers like -1,-2 (got {self.layers!r})")
        if not idx:
            raise ValueError("--layers: give at least one layer index")
        return self

    @property
    def layer_indexes(self) -> list[int]:
        return [int(x) for x in self.layers.split(",") if x.strip()]


# --------------------------------------------------------------------------------------------------
# bert smoke-test: does BERT train on this machine's accelerators (bert_core.smoke_test)
# --------------------------------------------------------------------------------------------------
class SmokeTestConfig(StageConfig):
    """`bert smoke-test`: defaults are the ROCm fork's scripts/run_model_in_rocm_docker.sh (bert_large,
    SEQ=128, BATCH=8, --auto_mixed_precision=True, learning rate 2e-5)."""

    model: ModelName | None = Field(None, description="The shape to train (default: bert-large on a GPU, as the "
                                                      "ROCm fork's script; bert-tiny on the CPU)")
    max_seq_length: int = Field(128, ge=8, description="Sequence length")
    train_batch_size: int = Field(8, ge=1, description="Sequences per step (per rank under horovodrun)")
    max_predictions_per_seq: int | None = Field(None, ge=1, description="Masked-LM slots (default: "
                                                                       "ceil(0.15 x max_seq_length))")
    num_train_steps: int = Field(20, ge=2, description="Updates on each device (the first is not timed)")
    dtype: Precision | None = Field(None, description="fp32, fp16 or bf16 (default: fp16 on a GPU, as the "
                                                      "fork's --auto_mixed_precision=True; fp32 on the CPU)")
    xla: bool = Field(False, description="Compile the step with XLA")
    optimizer_type: OptimizerType = Field("adam", description="AdamW, LAMB, NAdam or NLAMB")
    learning_rate: float = Field(2e-5, gt=0, description="Learning rate (no warmup)")
    random_seed: int = Field(12345, description="Seed of the weights and the random token ids")
    agreement_tolerance: float = Field(1e-6, ge=0, description="Under horovodrun: the largest relative "
                                                               "difference of a rank's loss and weights "
                                                               "checksum from rank 0's")

    @model_validator(mode="after")
    def _check(self) -> "SmokeTestConfig":
        if self.max_predictions_per_seq is not None and self.max_predictions_per_seq >= self.max_seq_length:
            raise ValueError(f"--max_predictions_per_seq={self.max_predictions_per_seq} must be below "
                             f"--max_seq_length={self.max_seq_length}")
        return self


# Stage 5: publish to the model registry through the gate (bert_core.publish)
# --------------------------------------------------------------------------------------------------
class PublishConfig(StageConfig):
    """`bert publish`: register a pretrained model as a new version and publish it if the gate passes."""

    registry: str = Field(description="The model registry: gs://, s3://, minio:// or a local directory")
    model_name: str = Field(description="The model's name in the registry (one vocab per name)")
    model_dir: str = Field(description="The candidate: a pretraining output (bert_config.json, vocab.txt, ckpt-*)")
    saved_model_dir: str | None = Field(None, description="The fine-tuned SavedModel to keep with the version")
    finetune_metrics: str | None = Field(None, description="metrics.json of `bert evaluate` on the fine-tuned "
                                                           "task (the gate's `finetune <key>` numbers)")
    task_data_dir: str | None = Field(None, description="The fine-tuning task's directory (its test/dev files "
                                                        "identify the task; heldout_documents.txt, if there)")
    heldout_documents: str | None = Field(None, description="Documents excluded from pretraining, to pin the "
                                                            "held-out set the first time (default: "
                                                            "task_data_dir/heldout_documents.txt)")
    gate_rule: str = Field("masked-LM loss not worse and finetune accuracy not worse by more than 2 points",
                           description="The gate (bert_core.gate), e.g. 'finetune accuracy up by >= 0.5 "
                                       "points and masked-LM loss not worse'")
    parent_version: int = Field(0, ge=0, description="The version this run continued from (0: from scratch)")
    data_manifest: str | None = Field(None, description="data_manifest.json of the shards pretraining read")
    lineage_file: str | None = Field(None, description="JSON merged into lineage.json (corpus snapshot, "
                                                       "stage parameters)")
    run_id: str = Field("", description="The pipeline run id, for the lineage")
    do_lower_case: bool = Field(True, description="Casing of the held-out set (as the model's data)")
    max_seq_length: int = Field(128, ge=8, description="Sequence length of the held-out set")
    max_predictions_per_seq: int = Field(20, ge=1, description="Masked positions per sequence of the held-out set")
    decision_file: str | None = Field(None, description="Write the gate's decision as Markdown here")
    result_file: str | None = Field(None, description="Write the outcome as JSON here (version, decision, reason)")
