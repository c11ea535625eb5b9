"""GLUE-style classification data: TSV readers for each task and features as Google's run_classifier.py.

A task knows where its files are (`train.tsv`, `dev.tsv`, MNLI's `dev_matched.tsv`, ...), which
columns hold the texts and the label, and its label list (`None` for a regression task). Files are
read as the GLUE distribution and Google's `_read_tsv` read them: tab-delimited, no quoting (a `"` is
text). Every row must have as many columns as the file's header (or the layout's fixed width for
header-less files), and every label must be one of the task's labels; otherwise a `UserError` names
`file:line`.

Features follow `convert_single_example`: `[CLS] a [SEP] b [SEP]`, the pair truncated longest-first
to `max_seq_length - 3` (a single text to `max_seq_length - 2`), segment ids 0 for `[CLS] a [SEP]` and
1 for `b [SEP]`, a mask of ones over real tokens, zero padding, and the label's index (a float for
regression). They come back as numpy arrays (`ClassifierFeatures`).

    task = get_task("mrpc")
    examples = task.get_examples(data_dir, "train")
    features = convert_examples_to_features(examples, task, max_seq_length=128, tokenizer=tokenizer)
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from bert_core import storage
from bert_core.errors import UserError, where

# csv raises on fields over 128 KiB by default; a long paragraph is still text.
csv.field_size_limit(1 << 30)


@dataclass(frozen=True)
class InputExample:
    """One example: `label` is a string (classification), a float (regression) or None (unlabelled)."""

    guid: str
    text_a: str
    text_b: str | None = None
    label: str | float | None = None


# --------------------------------------------------------------------------------------------------
# Reading TSV files
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where the fields of one file live. Columns are 0-based indexes; -1 means the last column.

    `columns` is the number of columns every row must have; `None` means "as many as the header"."""

    header: bool
    text_a: int
    text_b: int | None = None
    label: int | None = None
    columns: int | None = None
    language: int | None = None  # XNLI dev/test: rows of other languages are skipped


def read_tsv(path: str) -> list[tuple[int, list[str]]]:
    """Rows of a TSV file as (line number, fields); blank lines are skipped. Tab-delimited, no quoting."""
    text = storage.read_text(path)
    rows = []
    reader = csv.reader(io.StringIO(text, newline=None), delimiter="\t", quoting=csv.QUOTE_NONE)
    for row in reader:
        if not row:
            continue
        rows.append((reader.line_num, row))
    if not rows:
        raise UserError(f"{path}: is empty, expected tab-separated rows")
    return rows


def _check_width(path: str, line: int, row: list[str], expected: int) -> None:
    if len(row) != expected:
        raise UserError(f"{where(path, line)}: expected {expected} columns, got {len(row)}")


class Task:
    """A classification or regression task read from TSV files in a data directory.

    `files` maps a split name ("train", "dev", "dev_matched", "test", ...) to its file name and layout;
    `labels` is the label list (index = label id) or None for regression."""

    name: str = ""
    labels: list[str] | None = None
    dev_splits: tuple[str, ...] = ("dev",)
    test_splits: tuple[str, ...] = ("test",)

    def files(self) -> dict[str, tuple[str, Layout]]:
        raise NotImplementedError

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files())

    def path(self, data_dir: str, split: str) -> str:
        files = self.files()
        if split not in files:
            raise UserError(f"task {self.name}: no split {split!r}; expected one of {list(files)}")
        return os.path.join(data_dir, files[split][0])

    # The three calls of Google's DataProcessor, for readers of run_classifier.py.
    def get_train_examples(self, data_dir: str) -> list[InputExample]:
        return self.get_examples(data_dir, "train")

    def get_dev_examples(self, data_dir: str) -> list[InputExample]:
        return self.get_examples(data_dir, self.dev_splits[0])

    def get_test_examples(self, data_dir: str) -> list[InputExample]:
        return self.get_examples(data_dir, self.test_splits[0])

    def get_labels(self) -> list[str] | None:
        return self.labels

    def get_examples(self, data_dir: str, split: str) -> list[InputExample]:
        check_data_dir(data_dir)
        path = self.path(data_dir, split)
        layout = self.files()[split][1]
        return self.parse_rows(path, read_tsv(path), layout, split)

    def normalize_label(self, label: str) -> str:
        return label

    def parse_rows(self, path: str, rows: list[tuple[int, list[str]]], layout: Layout,
                   split: str) -> list[InputExample]:
        if layout.header:
            header_line, header = rows[0]
            rows = rows[1:]
            width = layout.columns if layout.columns is not None else len(header)
            _check_width(path, header_line, header, width)
        else:
            width = layout.columns if layout.columns is not None else len(rows[0][1])
        needed = max(c for c in (layout.text_a, layout.text_b, layout.label, layout.language, 0)
                     if c is not None) + 1
        if width < needed:
            raise UserError(f"{path}: expected at least {needed} columns for task {self.name}, "
                            f"the file has {width}")
        examples = []
        for index, (line, row) in enumerate(rows, start=1 if layout.header else 0):
            _check_width(path, line, row, width)
            if layout.language is not None and row[layout.language] != getattr(self, "language", None):
                continue
            label: str | float | None = None
            if layout.label is not None:
                label = self.parse_label(path, line, row[layout.label])
            examples.append(InputExample(
                guid=f"{split}-{index}",
                text_a=row[layout.text_a],
                text_b=row[layout.text_b] if layout.text_b is not None else None,
                label=label))
        return examples

    def parse_label(self, path: str, line: int, text: str) -> str | float:
        if self.labels is None:
            try:
                return float(text)
            except ValueError:
                raise UserError(f"{where(path, line)}: label {text!r} is not a number") from None
        label = self.normalize_label(text)
        if label not in self.labels:
            raise UserError(f"{where(path, line)}: label {text!r} is not one of {self.labels}")
        return label


def check_data_dir(data_dir: str) -> None:
    if not data_dir:
        raise UserError("--data_dir: required for this task")
    if not storage.isdir(data_dir):
        raise UserError(f"{data_dir}: no such directory (--data_dir)")
    if not os.listdir(data_dir):
        raise UserError(f"{data_dir}: the data directory is empty (--data_dir)")


class _Glue(Task):
    """Most GLUE tasks: train.tsv, dev.tsv and test.tsv with a header; test has no label column."""

    labelled: Layout
    unlabelled: Layout

    def files(self):
        return {"train": ("train.tsv", self.labelled), "dev": ("dev.tsv", self.labelled),
                "test": ("test.tsv", self.unlabelled)}


class ColaTask(_Glue):
    # train/dev: source, label, original label, sentence (no header). test: index, sentence (header).
    name, labels = "cola", ["0", "1"]
    labelled = Layout(header=False, columns=4, text_a=3, label=1)
    unlabelled = Layout(header=True, text_a=1)


class Sst2Task(_Glue):
    # train/dev: sentence, label. test: index, sentence.
    name, labels = "sst-2", ["0", "1"]
    labelled = Layout(header=True, text_a=0, label=1)
    unlabelled = Layout(header=True, text_a=1)


class MrpcTask(_Glue):
    # Quality, #1 ID, #2 ID, #1 String, #2 String (test: index instead of Quality).
    name, labels = "mrpc", ["0", "1"]
    labelled = Layout(header=True, text_a=3, text_b=4, label=0)
    unlabelled = Layout(header=True, text_a=3, text_b=4)


class StsbTask(_Glue):
    # index, genre, filename, year, old_index, source1, source2, sentence1, sentence2, score (test: no score)
    name, labels = "sts-b", None
    labelled = Layout(header=True, text_a=7, text_b=8, label=-1)
    unlabelled = Layout(header=True, text_a=7, text_b=8)


class QqpTask(_Glue):
    # id, qid1, qid2, question1, question2, is_duplicate. test: id, question1, question2.
    name, labels = "qqp", ["0", "1"]
    labelled = Layout(header=True, text_a=3, text_b=4, label=5)
    unlabelled = Layout(header=True, text_a=1, text_b=2)


class QnliTask(_Glue):
    # index, question, sentence, label (test: no label)
    name, labels = "qnli", ["entailment", "not_entailment"]
    labelled = Layout(header=True, text_a=1, text_b=2, label=-1)
    unlabelled = Layout(header=True, text_a=1, text_b=2)


class RteTask(QnliTask):
    # index, sentence1, sentence2, label
    name = "rte"


class WnliTask(_Glue):
    name, labels = "wnli", ["0", "1"]
    labelled = Layout(header=True, text_a=1, text_b=2, label=-1)
    unlabelled = Layout(header=True, text_a=1, text_b=2)


class MnliTask(Task):
    # index, promptID, pairID, genre, 4 parse columns, sentence1, sentence2, [label1..label5,] gold_label
    name, labels = "mnli", ["contradiction", "entailment", "neutral"]
    dev_splits = ("dev_matched", "dev_mismatched")
    test_splits = ("test_matched", "test_mismatched")

    def files(self):
        labelled = Layout(header=True, text_a=8, text_b=9, label=-1)
        unlabelled = Layout(header=True, text_a=8, text_b=9)
        return {"train": ("train.tsv", labelled),
                "dev_matched": ("dev_matched.tsv", labelled),
                "dev_mismatched": ("dev_mismatched.tsv", labelled),
                "test_matched": ("test_matched.tsv", unlabelled),
                "test_mismatched": ("test_mismatched.tsv", unlabelled)}


class XnliTask(Task):
    """XNLI as Google's XnliProcessor: train is the machine-translated MultiNLI of one language
    (`multinli/multinli.train.<lang>.tsv`: premise, hypo, label; "contradictory" means "contradiction"),
    dev and test are `xnli.dev.tsv`/`xnli.test.tsv` with all languages (language, gold_label, ...,
    sentence1 in column 6, sentence2 in column 7), filtered to the language."""

    name, labels = "xnli", ["contradiction", "entailment", "neutral"]

    def __init__(self, language: str = "zh"):
        self.language = language

    def files(self):
        multi = Layout(header=True, text_a=6, text_b=7, label=1, language=0)
        return {"train": (os.path.join("multinli", f"multinli.train.{self.language}.tsv"),
                          Layout(header=True, text_a=0, text_b=1, label=2)),
                "dev": ("xnli.dev.tsv", multi),
                "test": ("xnli.test.tsv", multi)}

    def normalize_label(self, label: str) -> str:
        return "contradiction" if label == "contradictory" else label


class TsvTask(Task):
    """A user's own TSV task: name the text column(s) and the label column, by header name or 0-based
    index, and say whether the files have a header. Labels default to the sorted labels of train.tsv;
    `labels=None` with `regression=True` makes it a regression task."""

    name = "tsv"

    def __init__(self, text_a_column: str | int, label_column: str | int | None,
                 text_b_column: str | int | None = None, has_header: bool = True,
                 labels: Sequence[str] | None = None, regression: bool = False):
        self.columns = {"text_a": text_a_column, "text_b": text_b_column, "label": label_column}
        self.has_header = has_header
        self.regression = regression
        self._labels = list(labels) if labels else None

    @property
    def labels(self):  # type: ignore[override]
        return None if self.regression else self._labels

    def files(self):
        layout = Layout(header=self.has_header, text_a=0)  # columns resolved per file in get_examples
        return {"train": ("train.tsv", layout), "dev": ("dev.tsv", layout), "test": ("test.tsv", layout)}

    def _resolve(self, path: str, header: list[str] | None, which: str) -> int | None:
        col = self.columns[which]
        if col is None or col == "":
            return None
        if isinstance(col, int) or str(col).lstrip("-").isdigit():
            return int(col)
        if header is None:
            raise UserError(f"--{which}_column={col!r}: a column name needs a header row "
                            f"(use a 0-based index, or --has_header)")
        if col not in header:
            raise UserError(f"{where(path, 1)}: no column {col!r} (--{which}_column) in the header {header}")
        return header.index(col)

    def get_examples(self, data_dir: str, split: str) -> list[InputExample]:
        check_data_dir(data_dir)
        path = self.path(data_dir, split)
        rows = read_tsv(path)
        header = rows[0][1] if self.has_header else None
        label_col = self._resolve(path, header, "label")
        if split != "train" and label_col is not None and label_col >= len(header or rows[0][1]):
            label_col = None  # a test file without the label column
        layout = Layout(header=self.has_header, text_a=self._resolve(path, header, "text_a"),
                        text_b=self._resolve(path, header, "text_b"), label=label_col)
        if self.labels is None and not self.regression and label_col is not None:
            if split != "train":
                self._labels = self._labels_from(os.path.join(data_dir, "train.tsv"), layout)
            else:
                self._labels = self._labels_from(path, layout)
        return self.parse_rows(path, rows, layout, split)

    def _labels_from(self, path: str, layout: Layout) -> list[str]:
        rows = read_tsv(path)[1 if layout.header else 0:]
        return sorted({row[layout.label] for _, row in rows if len(row) > layout.label})  # type: ignore[index]


GLUE_TASKS: dict[str, type[Task]] = {
    "cola": ColaTask, "sst-2": Sst2Task, "mrpc": MrpcTask, "sts-b": StsbTask, "qqp": QqpTask,
    "mnli": MnliTask, "qnli": QnliTask, "rte": RteTask, "wnli": WnliTask, "xnli": XnliTask,
}
_ALIASES = {"sst2": "sst-2", "stsb": "sts-b", "sts": "sts-b", "mnli-m": "mnli", "mnli-mm": "mnli"}
TASK_NAMES = tuple(GLUE_TASKS) + ("tsv",)


def get_task(name: str, **options) -> Task:
    """A task by its name as `--task_name` gives it (case-insensitive: "MRPC", "sst-2", "STS-B", "tsv").

    Options: XNLI takes `language`; "tsv" takes TsvTask's arguments."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key == "tsv":
        return TsvTask(**options)
    if key not in GLUE_TASKS:
        raise UserError(f"--task_name={name!r}: expected one of {list(TASK_NAMES)}")
    return GLUE_TASKS[key](**options)


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------
@dataclass
class ClassifierFeatures:
    """Features of N examples as arrays: input_ids/input_mask/segment_ids [N, max_seq_length] int32,
    label_ids [N] (int32, or float32 for regression)."""

    input_ids: np.ndarray
    input_mask: np.ndarray
    segment_ids: np.ndarray
    label_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "input_mask": self.input_mask, "segment_ids": self.segment_ids,
                "label_ids": self.label_ids}


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_length: int) -> None:
    """Shorten the pair in place to at most `max_length` tokens, one token at a time from the end of
    the longer list (the second list on a tie)."""
    while len(tokens_a) + len(tokens_b) > max_length:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


def build_inputs(tokens_a: list[str], tokens_b: list[str] | None, max_seq_length: int
                 ) -> tuple[list[str], list[int]]:
    """`[CLS] a [SEP] (b [SEP])` after truncation, and the segment ids (unpadded)."""
    tokens_a = list(tokens_a)
    tokens_b = list(tokens_b) if tokens_b else None
    if tokens_b:
        truncate_seq_pair(tokens_a, tokens_b, max_seq_length - 3)
    else:
        tokens_a = tokens_a[:max_seq_length - 2]
    tokens = ["[CLS]", *tokens_a, "[SEP]"]
    segment_ids = [0] * len(tokens)
    if tokens_b:
        tokens += [*tokens_b, "[SEP]"]
        segment_ids += [1] * (len(tokens_b) + 1)
    return tokens, segment_ids


def _label_id(example: InputExample, labels: list[str] | None) -> int | float:
    if example.label is None:
        return 0.0 if labels is None else 0  # unlabelled (test) examples: a placeholder, as the original
    if labels is None:
        return float(example.label)
    try:
        return labels.index(example.label)  # type: ignore[arg-type]
    except ValueError:
        raise UserError(f"example {example.guid}: label {example.label!r} is not one of {labels}") from None


def convert_examples_to_features(
    examples: Sequence[InputExample],
    task_or_labels: Task | list[str] | None,
    max_seq_length: int,
    tokenizer,
    tokenize_batch: Callable[[list[str]], list[list[str]]] | None = None,
) -> ClassifierFeatures:
    """Examples -> arrays, as Google's convert_single_example applied to each example.

    `tokenizer` has `.tokenize(text)` and `.convert_tokens_to_ids(tokens)` (FullTokenizer).
    `tokenize_batch`, if given, tokenizes a list of texts at once (a fast batch tokenizer) and is used
    instead of `tokenizer.tokenize`; ids still come from `tokenizer.convert_tokens_to_ids`."""
    if max_seq_length < 3:
        raise UserError(f"--max_seq_length={max_seq_length}: must be at least 3")
    labels = task_or_labels.labels if isinstance(task_or_labels, Task) else task_or_labels
    n = len(examples)
    if tokenize_batch is not None:
        all_a = tokenize_batch([e.text_a for e in examples])
        pair_idx = [i for i, e in enumerate(examples) if e.text_b]
        pair_tokens = tokenize_batch([examples[i].text_b for i in pair_idx]) if pair_idx else []  # type: ignore[misc]
        all_b: list[list[str] | None] = [None] * n
        for i, toks in zip(pair_idx, pair_tokens):
            all_b[i] = toks
    else:
        all_a = [tokenizer.tokenize(e.text_a) for e in examples]
        all_b = [tokenizer.tokenize(e.text_b) if e.text_b else None for e in examples]

    input_ids = np.zeros((n, max_seq_length), np.int32)
    input_mask = np.zeros((n, max_seq_length), np.int32)
    segment_ids = np.zeros((n, max_seq_length), np.int32)
    label_ids = np.zeros((n,), np.float32 if labels is None else np.int32)
    for i, example in enumerate(examples):
        tokens, segments = build_inputs(all_a[i], all_b[i], max_seq_length)
        ids = tokenizer.convert_tokens_to_ids(tokens)
        input_ids[i, :len(ids)] = ids
        input_mask[i, :len(ids)] = 1
        segment_ids[i, :len(segments)] = segments
        label_ids[i] = _label_id(example, labels)
    return ClassifierFeatures(input_ids, input_mask, segment_ids, label_ids)
