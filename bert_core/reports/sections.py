"""Each stage's part of a report, from the files the stage left (bert_core.layout's names), local or
in object storage: a list of HTML blocks (bert_core.reports.page) a stage page or the run's page holds.

    vocab_blocks(vocab, corpus, lower)   learn-vocab: size, special tokens, piece lengths, the corpus tokenized
    data_blocks(data_dir)                create-data: the manifest's numbers, sequence lengths, masks
    training_blocks(model_dir, stage)    pretrain / finetune: loss, accuracies, learning rate, throughput
    evaluation_blocks(metrics_dir)       evaluate: confusion matrix, ROC, regression scatter, SQuAD
"""

from __future__ import annotations

from bert_core import layout, report_data, storage
from bert_core.reports import page, plots

# Pretraining's and fine-tuning's curves: (title, y label, [(legend, history key)]); a curve whose
# keys the history lacks (a fine-tuning run has no next-sentence accuracy) is left out.
TRAINING_CURVES = (
    ("Training loss", "loss", [("total", "loss"), ("masked LM", "masked_lm_loss"),
                               ("next sentence", "next_sentence_loss"), ("start", "start_loss"),
                               ("end", "end_loss")]),
    ("Masked-LM accuracy", "accuracy", [("masked LM", "masked_lm_accuracy")]),
    ("Next-sentence accuracy", "accuracy", [("next sentence", "next_sentence_accuracy")]),
    ("Training accuracy", "accuracy", [("train", "accuracy")]),
    ("Learning rate", "learning rate", [("learning rate", "learning_rate")]),
    ("Throughput", "sequences per second", [("all ranks", "sequences_per_second")]),
)

#: The numbers of each kind of stage a person reads first (the terminal table at the end of a run,
#: the top of the run's page, `artifacts compare`); evaluate shows every metric.
HEADLINE = {
    "corpus": ("documents", "sentences"),
    "vocab": ("size",),
    "data": ("instances", "tokens", "masked"),
    "pretrain": ("global_step", "train_loss", "eval.loss", "eval.masked_lm_accuracy", "eval.next_sentence_accuracy",
                 "sequences_per_second", "train_seconds"),
    "finetune": ("global_step", "train_loss", "eval.accuracy", "eval.f1", "eval.exact_match", "eval.pearson",
                 "train_seconds"),
}
#: What a training stage's own page adds to its headline numbers: how it was run.
TRAINING_SETTINGS = ("sequences_per_second", "world_size", "global_batch_size", "dtype")


def flat(obj: dict, prefix: str = "") -> dict:
    """A nested metrics document with dotted keys (lists kept as they are)."""
    out: dict = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def curve(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of a history key; throughput leaves out the first logged step, whose time
    includes tracing and compiling the step."""
    return report_data.series(history[1:] if key == "sequences_per_second" else history, key)


def training_figures(history: list[dict], stage: str) -> list[plots.Figure]:
    figs = []
    for title, ylabel, curves in TRAINING_CURVES:
        drawn = [(legend, *curve(history, key)) for legend, key in curves]
        drawn = [(legend, x, y) for legend, x, y in drawn if x]
        if drawn:
            figs.append(plots.lines(title, "step", ylabel, drawn, caption=f"{stage}, at each logged step"))
    return figs


def training_blocks(model_dir: str, stage: str) -> list[str]:
    """Curves from the run's history (layout.TRAIN_HISTORY) and the numbers of its metrics file."""
    metrics_name = layout.PRETRAIN_METRICS if stage.startswith("pretrain") else layout.FINETUNE_METRICS
    path = storage.join(model_dir, metrics_name)
    numbers = flat(storage.read_json(path)) if storage.exists(path) else {}
    history = report_data.read_history(layout.train_history_path(model_dir))
    blocks = [page.figures(training_figures(history, stage))]
    if not history:
        blocks.append(page.note(f"no training history in {layout.train_history_path(model_dir)} (the run trained "
                                f"no step, or an older version wrote it)"))
    kind = "pretrain" if stage.startswith("pretrain") else "finetune"
    shown = [k for k in dict.fromkeys(HEADLINE[kind] + TRAINING_SETTINGS) if k in numbers]
    if shown:
        blocks.append(page.table(["metric", "value"], [[k, numbers[k]] for k in shown]))
    blocks.append(page.note(tensorboard_note(storage.join(model_dir, layout.SUMMARIES_DIR))))
    return blocks


def vocab_blocks(vocab_file: str, corpus_files: list[str], do_lower_case: bool, max_lines: int = 5000) -> list[str]:
    """The vocab (size, special tokens, its pieces' lengths) and how it tokenizes the corpus's first
    `max_lines` lines (report_data.vocab_statistics)."""
    stats = report_data.vocab_statistics(vocab_file, corpus_files, do_lower_case, max_lines)
    lengths = stats["piece_lengths"]
    longest = max((n for counts in lengths.values() for n in counts), default=0)
    figs = []
    if longest:
        figs.append(plots.bars("WordPiece lengths", "characters (without ##)", "pieces",
                               [str(n) for n in range(1, longest + 1)],
                               {kind if kind == "word start" else "continuation (##)":
                                [counts.get(n, 0) for n in range(1, longest + 1)] for kind, counts in lengths.items()},
                               caption=f"{stats['size']:,} tokens less the special ones"))
    sample = (f"the first {stats['sample_lines']:,} lines of the corpus" if stats["sample_lines"] >= max_lines
              else f"the corpus ({stats['sample_lines']:,} lines)" if corpus_files else "no corpus found")
    if stats["words"]:
        by_pieces = stats["by_pieces"]
        figs.append(plots.bars("Pieces per word", "pieces", "% of words", [str(n) for n in by_pieces],
                               {"words": [round(100 * v / stats["words"], 2) for v in by_pieces.values()]},
                               caption=f"{stats['words']:,} words of {sample}; an unknown word is one [UNK]"))
    specials = ", ".join(f"{t} {i}" if i is not None else f"{t} missing" for t, i in stats["special_tokens"].items())
    rows = [["vocab size", stats["size"]], ["special tokens (id)", specials],
            ["word-start pieces", sum(lengths["word start"].values())],
            ["continuation pieces (##)", sum(lengths["continuation"].values())],
            ["lower-cased", stats["do_lower_case"]], ["sample", sample]]
    if stats["words"]:
        rows += [["words (distinct)", f"{stats['words']:,} ({stats['distinct_words']:,})"],
                 ["pieces per word", round(stats["pieces_per_word"], 4)],
                 ["[UNK] words", f"{stats['unk_rate']:.2%} ({stats['unk_words']:,})"],
                 ["words split into pieces", f"{stats['split_rate']:.2%}"]]
    blocks = [page.figures(figs), page.table(["vocab", "value"], rows)]
    if stats.get("split_examples"):
        blocks.append(page.table(["frequent split word", "times", "pieces"],
                                 [[w, n, " ".join(p)] for w, n, p in stats["split_examples"]]))
    if stats.get("unk_examples"):
        blocks.append(page.table(["frequent [UNK] word", "times"], stats["unk_examples"]))
    return blocks


def corpus_blocks(corpus_files: list[str], task_dir: str | None = None, prepared: dict | None = None,
                  unprepared_note: str = "", max_documents: int | None = None) -> list[str]:
    """The prepared corpus (report_data.corpus_statistics: sentence and document lengths, counts), the
    held-out task's split sizes, and with `prepared` (prepare-corpus's corpus_report.json) what it
    dropped, per reason, with examples; without it, `unprepared_note` says why not."""
    from bert_core.corpus.clean import REASONS

    stats = report_data.corpus_statistics(corpus_files, task_dir, max_documents)
    every = f"the first {stats['documents']:,} documents" if stats["sampled"] else "every document"
    figs = []
    if stats["sentences"]:
        lengths = stats["sentence_tokens"]
        figs.append(plots.histogram("Sentence lengths", "tokens per sentence (split at whitespace)", list(lengths),
                                    bins=_int_bins(list(lengths), None), ylabel="sentences",
                                    weights=list(lengths.values()),
                                    caption=f"every sentence of {every} of the corpus ({stats['sentences']:,})"))
        docs = stats["document_sentences"]
        figs.append(plots.histogram("Document lengths", "sentences per document", list(docs),
                                    bins=_int_bins(list(docs), None), ylabel="documents", weights=list(docs.values()),
                                    caption=f"{every} of the corpus ({stats['documents']:,})"))
    rows = [["documents", stats["documents"]], ["sentences", stats["sentences"]],
            ["tokens (whitespace)", stats["tokens"]]]
    if stats["sampled"]:
        rows = [[f"{name} (first {stats['documents']:,} documents)", n] for name, n in rows]
    if prepared:
        rows = [["documents read", prepared["documents_in"]], *rows, ["characters", prepared["chars_out"]]]
    blocks = [page.figures(figs), page.table(["corpus", "value"], rows)]
    task = stats.get("task")
    if task:
        blocks.append(page.table(["held-out task split", "documents", "examples"],
                                 [[name, task["documents_per_split"].get(name, 0), n] for name, n in task["examples"].items()]
                                 + [["all", task["documents"], sum(task["examples"].values())]]))
    else:
        blocks.append(page.note("no held-out task (heldout_fraction 0)"))
    if prepared is None:
        blocks.append(page.note(unprepared_note or "prepare-corpus did not run: nothing dropped"))
    elif not prepared["dropped"]:
        blocks.append(page.note("prepare-corpus dropped no document"))
    else:
        blocks.append(page.table(["dropped because", "documents", "meaning"],
                                 [[r, n, REASONS.get(r, "")] for r, n in
                                  sorted(prepared["dropped"].items(), key=lambda kv: -kv[1])]))
        blocks.append(page.table(["reason", "where", "text (start)"],
                                 [[r, ex["where"], ex["text"] or "(empty)"]
                                  for r in sorted(prepared["examples"]) for ex in prepared["examples"][r]]))
    return blocks


def tensorboard_note(summaries: str) -> str:
    """How to look at a training stage's summaries; TensorFlow 2.18's TensorBoard has no s3://."""
    s3 = storage.is_remote(summaries) and storage.scheme_of(summaries) in ("s3://", "minio://")
    return f"TensorBoard: tensorboard --logdir {summaries}" + (
        " (a TensorBoard installed without TensorFlow reads s3://; with TensorFlow, `bert-pipeline artifacts "
        "download` the summaries first: docs/pipeline.md)" if s3 else "")


def data_blocks(data_dir: str, max_records: int = 20000) -> list[str]:
    """The manifest's totals and parameters, and from the shards' records: sequence lengths, masked
    positions per instance."""
    manifest = storage.read_json(storage.join(data_dir, layout.DATA_MANIFEST))
    shards = [storage.join(data_dir, s["file"]) for s in manifest.get("shards", []) if s.get("instances")]
    stats = report_data.shard_statistics(shards, max_records)
    params = manifest.get("parameters", {})
    shapes = manifest.get("format", {}).get("shapes", {})
    seq, predictions = shapes.get("input_ids"), shapes.get("masked_lm_positions")
    sample = (f"the first {stats['records_read']:,} of {manifest['totals'].get('instances', 0):,} instances"
              if stats["records_read"] < manifest["totals"].get("instances", 0) else "every instance")
    figs = []
    if stats["sequence_lengths"]:
        figs.append(plots.histogram("Sequence lengths", "tokens per instance (with [CLS] and [SEP])",
                                    stats["sequence_lengths"], bins=_int_bins(stats["sequence_lengths"], seq),
                                    caption=f"{sample}; max_seq_length {seq}"))
        figs.append(plots.histogram("Masked positions", "masked tokens per instance", stats["masked_positions"],
                                    bins=_int_bins(stats["masked_positions"], predictions),
                                    caption=f"{sample}; max_predictions_per_seq {predictions}"))
    per_shard = manifest.get("shards", [])
    if len(per_shard) > 1:
        figs.append(plots.bars("Instances per shard", "shard", "instances",
                               [str(s.get("shard", i)) for i, s in enumerate(per_shard)],
                               {"instances": [s.get("instances", 0) for s in per_shard]}))
    totals = {k: v for k, v in manifest.get("totals", {}).items() if not isinstance(v, list)}
    rows = [[k, v] for k, v in totals.items()] + [["shards", len(per_shard)], ["vocab size", manifest["vocab"]["size"]]]
    return [page.figures(figs), page.table(["manifest", "value"], rows),
            page.table(["parameter", "value"], [[k, v] for k, v in params.items() if not isinstance(v, (list, dict))])]


def _int_bins(values: list[int], upper: int | None) -> list[float]:
    """One bin per integer from 0 (or the smallest value) to `upper` (or the largest)."""
    high = max(upper or 0, max(values))
    low = min(values)
    step = max(1, (high - low + 1) // 64)
    return [x - 0.5 for x in range(low, high + 2, step)]


def evaluation_blocks(metrics_dir: str) -> list[str]:
    """metrics.json as a table and eval_details.json's pictures."""
    values = storage.read_json(storage.join(metrics_dir, layout.EVAL_METRICS))
    details_path = storage.join(metrics_dir, layout.EVAL_DETAILS)
    details = storage.read_json(details_path) if storage.exists(details_path) else {}
    figs = evaluation_figures(details)
    return [page.figures(figs), page.table(["metric", "value"], [[k, v] for k, v in values.items()])]


def evaluation_figures(details: dict) -> list[plots.Figure]:
    kind, figs = details.get("kind"), []
    task = details.get("task", "")
    if kind == report_data.CLASSIFICATION:
        n = sum(map(sum, details["confusion_matrix"]))
        figs.append(plots.confusion_matrix(details["labels"], details["confusion_matrix"],
                                           caption=f"{task}: {n} examples, gold label by row"))
        if roc := details.get("roc"):
            figs.append(plots.roc(roc["fpr"], roc["tpr"], roc["auc"],
                                  caption=f"{task}: positive label {details['labels'][1]!r}"))
    elif kind == report_data.REGRESSION:
        figs.append(plots.scatter(details["gold"], details["predicted"], caption=f"{task}: {len(details['gold'])} pairs"))
    elif kind == report_data.SQUAD:
        by_type = details.get("by_answer_type", {})
        if by_type:
            names = list(by_type)
            figs.append(plots.bars("EM and F1 by answer type", "questions", "score (%)",
                                   [f"{n} ({by_type[n].get('total') or '?'})" for n in names],
                                   {"exact match": [by_type[n]["exact"] for n in names],
                                    "F1": [by_type[n]["f1"] for n in names]}, caption=task))
        if curves := details.get("threshold_curves"):
            figs.append(plots.lines("Score over the no-answer threshold", "null-odds threshold", "score (%)",
                                    [(name, c["thresholds"][1:], c["scores"][1:]) for name, c in curves.items()],
                                    caption="predicting no answer above the threshold; the top is best_*",
                                    steps=True))
    return figs
