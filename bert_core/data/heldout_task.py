"""A fine-tuning task made from held-out documents of the pretraining corpus: does B follow A?

The pipeline's embedded default needs a labelled task without a download. This module splits a
corpus (one sentence a line, a blank line between documents) into

  corpus.txt           the documents pretraining sees
  task/train.tsv       sentence pairs from held-out documents pretraining never sees,
  task/dev.tsv         in the generic tsv task's layout: a header `sentence_a  sentence_b  label`;
  task/test.tsv        sentence_a is up to `context` consecutive sentences, and sentence_b is the
                       sentence right after them (label 1) or a sentence of another held-out
                       document of the same split (label 0); each sentence_a comes with both
  task/task.json       what was written (counts per split, the columns to name, the seed)

Documents, not sentences, are split between train, dev and test, so no pair of a dev or test split
shares a document with training. Every split is balanced, and since each sentence_a appears with
both labels, only the relation between the two sentences tells them apart. Read with
`bert_core.data.glue.get_task("tsv", text_a_column="sentence_a", text_b_column="sentence_b",
label_column="label")`, i.e. `bert finetune --task_name=tsv --text_a_column=sentence_a ...`.

The corpus is streamed: only the held-out documents (at most `max_heldout_documents`) are kept in
memory, so a large user corpus works too. No corpus given means the embedded default
(bert_core.data.corpora: the prose that ships with Python).
"""

from __future__ import annotations

import random
from typing import Iterable, Iterator

from bert_core import storage
from bert_core.errors import UserError

COLUMNS = ("sentence_a", "sentence_b", "label")
SPLITS = (("train", 0.7), ("dev", 0.15), ("test", 0.15))
#: The tsv task's column fields that read these files (FinetuneConfig / EvalConfig field names).
TASK_FIELDS = {"task_name": "tsv", "text_a_column": "sentence_a", "text_b_column": "sentence_b",
               "label_column": "label", "has_header": True, "labels": "0,1"}


def _documents(corpus: str | None) -> Iterator[list[str]]:
    if not corpus:
        from bert_core.data.corpora import python_docs_documents

        yield from python_docs_documents()
        return
    from bert_core.data.corpus import expand_inputs, iter_documents

    for path in expand_inputs(corpus):
        yield from iter_documents(path)


def _clean(sentence: str) -> str:
    return " ".join(sentence.replace("\t", " ").split())


def sentence_pairs(documents: list[list[str]], rng: random.Random, context: int = 2) -> list[tuple[str, str, str]]:
    """Two pairs per sentence B that has a sentence before it: (A, B, "1") with A the up to `context`
    sentences right before B, and (A, C, "0") with C a random sentence of another document of the
    list. Every A appears once with each label, so the split is balanced and A alone tells nothing."""
    pairs = []
    for d, doc in enumerate(documents):
        for i in range(1, len(doc)):
            a = " ".join(doc[max(0, i - context):i])
            other = rng.randrange(len(documents) - 1)
            other += other >= d
            pairs.append((a, doc[i], "1"))
            pairs.append((a, rng.choice(documents[other]), "0"))
    rng.shuffle(pairs)
    return pairs


def _write_tsv(path: str, rows: Iterable[tuple[str, str, str]]) -> int:
    n = 0
    with storage.atomic_open(path, "w") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for row in rows:
            f.write("\t".join(_clean(x) for x in row) + "\n")
            n += 1
    return n


def split_corpus(corpus_out: str, task_dir: str | None, corpus: str | None = None,
                 heldout_fraction: float = 0.3, max_heldout_documents: int = 2000,
                 seed: int = 12345, context: int = 2) -> dict:
    """Write the pretraining corpus to `corpus_out` and, unless `task_dir` is None or the fraction
    is 0, the held-out task there. Returns the counts (also written to task_dir/task.json)."""
    if not 0 <= heldout_fraction < 1:
        raise UserError(f"heldout_fraction={heldout_fraction}: expected a number in [0, 1)")
    rng = random.Random(seed)
    held: list[list[str]] = []
    kept_docs = kept_sentences = 0
    hold = task_dir is not None and heldout_fraction > 0
    storage.makedirs(storage.dirname(corpus_out) or ".")
    if hold:
        storage.makedirs(task_dir)
    with storage.atomic_open(corpus_out, "w") as f:
        for doc in _documents(corpus):
            doc = [s for s in (_clean(x) for x in doc) if s]
            if not doc:
                continue
            if hold and len(doc) >= 2 and len(held) < max_heldout_documents and rng.random() < heldout_fraction:
                held.append(doc)
                continue
            if kept_docs:
                f.write("\n")
            f.write("\n".join(doc) + "\n")
            kept_docs += 1
            kept_sentences += len(doc)
    if kept_docs == 0:
        raise UserError(f"{corpus or 'the default corpus'}: no documents left for pretraining "
                        f"(empty corpus, or heldout_fraction={heldout_fraction} took them all)")
    summary = {"corpus": {"path": corpus_out, "documents": kept_docs, "sentences": kept_sentences,
                          "source": corpus or "python-docs (embedded default)"}}
    if not hold:
        return summary
    if len(held) < 3 * len(SPLITS):
        raise UserError(f"{corpus or 'the default corpus'}: only {len(held)} held-out documents of 2+ "
                        f"sentences; raise heldout_fraction or give a larger corpus")
    rng.shuffle(held)
    splits: dict[str, int] = {}
    start = 0
    for i, (name, share) in enumerate(SPLITS):
        end = len(held) if i == len(SPLITS) - 1 else start + max(2, round(share * len(held)))
        pairs = sentence_pairs(held[start:end], rng, context)
        splits[name] = _write_tsv(storage.join(task_dir, f"{name}.tsv"), pairs)
        start = end
    summary["task"] = {"path": task_dir, "documents": len(held), "examples": splits, "seed": seed,
                       "context": context, "fields": TASK_FIELDS,
                       "question": "does sentence_b come right after sentence_a in its document? (1 yes, 0 no)"}
    storage.write_json(storage.join(task_dir, "task.json"), summary)
    return summary
