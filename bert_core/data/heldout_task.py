"""A fine-tuning task made from held-out documents of the pretraining corpus: which topic group does
a sentence come from?

The pipeline's embedded default needs a labelled task without a download. This module splits a
corpus (one sentence a line, a blank line between documents) into

  corpus.txt           the documents pretraining sees
  task/train.tsv       single sentences of held-out documents pretraining never sees, in the
  task/dev.tsv         generic tsv task's layout: a header `sentence  label`; the label (0 or 1) is
  task/test.tsv        the topic group of the sentence's document (below)
  task/task.json       what was written (counts per split, the groups' words, the columns, the seed)
  task/heldout_documents.txt   the held-out documents themselves (the registry's pinned masked-LM
                       evaluation set is made from them: bert_core.heldout_eval)

Topic groups. The held-out documents are split in two by their words: each document is a TF-IDF
vector (lower-cased words in at least 2 held-out documents, the `max_words` most frequent), and the
documents are ordered by their projection on the first principal component of those vectors, the
direction along which the documents' vocabularies differ most. Group 1 is the upper half of that
order and group 0 the lower, the cut placed so that the two groups hold about equally many sentences.
On Python's docs the axis runs from statements and control flow (`suite`, `clause`, `executed`, ...)
to numbers and literals (`literal`, `numeric`, `floating`, ...); task.json lists each end's words.

Documents, not sentences, are split between train, dev and test (70/15/15 within each group), so no
sentence of a dev or test split comes from a document seen in training: the model has to tell a new
document's sentence by its words, not recall the document. Every split is balanced (the larger
group's sentences are sampled down to the smaller's). Sentences under `min_words` words are dropped.

Why not a sentence-pair task such as "does B follow A"? It was the first default, and a bert-tiny
pretrained for minutes on the ~1,600 sentences of Python's docs stayed at chance on it, as it did on
"are A and B from the same document" and on telling real sentences from word-shuffled ones, even at
learning rates where a lexical task is learned fully: such relations need a better pretrained
encoder than the embedded default's time budget allows (docs/pipeline.md has the numbers). A user's
own pair task runs through the same tsv task (`task_data_uri`, `text_b_column`).

Read with `bert_core.data.glue.get_task("tsv", text_a_column="sentence", label_column="label")`,
i.e. `bert finetune --task_name=tsv --text_a_column=sentence --label_column=label --labels=0,1`.

The corpus is streamed: only the held-out documents (at most `max_heldout_documents`) are kept in
memory, so a large user corpus works too. No corpus given means the embedded default
(bert_core.data.corpora: the prose that ships with Python).
"""

from __future__ import annotations

import collections
import math
import random
import re
from typing import Iterable, Iterator

from bert_core import storage
from bert_core.errors import UserError

COLUMNS = ("sentence", "label")
SPLITS = (("train", 0.7), ("dev", 0.15), ("test", 0.15))
#: The tsv task's column fields that read these files (FinetuneConfig / EvalConfig field names).
TASK_FIELDS = {"task_name": "tsv", "text_a_column": "sentence", "text_b_column": "",
               "label_column": "label", "has_header": True, "labels": "0,1"}
QUESTION = "which of the two topic groups of the held-out documents does the sentence come from? (0 or 1)"

_WORD = re.compile(r"\w+")


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


def topic_groups(documents: list[list[str]], max_words: int = 5000, iterations: int = 100
                 ) -> tuple[list[int], dict[str, list[str]]]:
    """Each document's group (0 or 1) and the 10 words at each end of the axis that splits them.

    TF-IDF vectors (L2-normalised) of the words in 2+ documents, centred; the first principal
    component by power iteration from a fixed start (deterministic); documents ordered by their
    projection (ties by position), and the cut where the upper part first holds at least half of the
    sentences."""
    import numpy as np

    counts = [collections.Counter(_WORD.findall(" ".join(d).lower())) for d in documents]
    df = collections.Counter(w for c in counts for w in c)
    words = sorted((w for w, n in df.items() if n >= 2), key=lambda w: (-df[w], w))[:max_words]
    index = {w: i for i, w in enumerate(words)}
    x = np.zeros((len(documents), max(1, len(words))), np.float32)
    for r, c in enumerate(counts):
        for w, n in c.items():
            if w in index:
                x[r, index[w]] = (1.0 + math.log(n)) * math.log(len(documents) / df[w])
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    x -= x.mean(axis=0)
    v = np.linspace(1.0, 2.0, x.shape[1], dtype=np.float32)  # a fixed start, not orthogonal to PC1 by chance
    for _ in range(iterations):
        v = x.T @ (x @ v)
        norm = float(np.linalg.norm(v))
        if norm == 0.0:  # no word tells the documents apart: the order is the documents' order
            break
        v /= norm
    score = x @ v if norm else np.zeros(len(documents), np.float32)
    order = sorted(range(len(documents)), key=lambda i: (float(score[i]), i))
    total = sum(len(d) for d in documents)
    group, upper = [0] * len(documents), 0
    for i in reversed(order[1:]):  # the lowest document always stays in group 0
        if 2 * upper >= total:
            break
        group[i] = 1
        upper += len(documents[i])
    ends = np.argsort(v) if norm else np.arange(0)
    axis = {"0": [words[i] for i in ends[:10]], "1": [words[i] for i in ends[::-1][:10]]}
    return group, axis


def topic_examples(documents: list[list[str]], groups: list[int], rng: random.Random,
                   min_words: int = 3) -> list[tuple[str, str]]:
    """(sentence, group) for every sentence of `min_words`+ words, the larger group sampled down to
    the smaller one's count, shuffled."""
    by_group: dict[int, list[str]] = {0: [], 1: []}
    for doc, g in zip(documents, groups):
        by_group[g] += [s for s in doc if len(s.split()) >= min_words]
    n = min(len(by_group[0]), len(by_group[1]))
    rows = [(s, str(g)) for g in (0, 1) for s in rng.sample(by_group[g], n)]
    rng.shuffle(rows)
    return rows


def _write_tsv(path: str, rows: Iterable[tuple[str, ...]]) -> int:
    n = 0
    with storage.atomic_open(path, "w") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for row in rows:
            f.write("\t".join(_clean(x) for x in row) + "\n")
            n += 1
    return n


def split_corpus(corpus_out: str, task_dir: str | None, corpus: str | None = None,
                 heldout_fraction: float = 0.3, max_heldout_documents: int = 2000,
                 seed: int = 12345, min_words: int = 3) -> dict:
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
    from bert_core.layout import HELDOUT_DOCUMENTS

    with storage.atomic_open(storage.join(task_dir, HELDOUT_DOCUMENTS), "w") as f:  # the gate's masked-LM set
        f.write("\n\n".join("\n".join(doc) for doc in held) + "\n")
    groups, axis = topic_groups(held)
    # Documents to splits within each group, so both groups are in every split.
    by_split: dict[str, list[int]] = {name: [] for name, _ in SPLITS}
    for g in (0, 1):
        docs = [i for i in range(len(held)) if groups[i] == g]
        rng.shuffle(docs)
        start = 0
        for k, (name, share) in enumerate(SPLITS):
            end = len(docs) if k == len(SPLITS) - 1 else min(len(docs), start + max(1, round(share * len(docs))))
            by_split[name] += docs[start:end]
            start = end
    splits: dict[str, int] = {}
    for name, docs in by_split.items():
        rows = topic_examples([held[i] for i in docs], [groups[i] for i in docs], rng, min_words)
        if not rows:
            raise UserError(f"{corpus or 'the default corpus'}: the held-out {name} split has no sentence of "
                            f"{min_words}+ words in one of the two topic groups; raise heldout_fraction or "
                            f"give a larger corpus")
        splits[name] = _write_tsv(storage.join(task_dir, f"{name}.tsv"), rows)
    summary["task"] = {"path": task_dir, "documents": len(held),
                       "documents_per_split": {k: len(v) for k, v in by_split.items()},
                       "documents_per_group": [groups.count(0), groups.count(1)],
                       "examples": splits, "seed": seed, "min_words": min_words, "fields": TASK_FIELDS,
                       "group_words": axis, "question": QUESTION}
    storage.write_json(storage.join(task_dir, "task.json"), summary)
    return summary
