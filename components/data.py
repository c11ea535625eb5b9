"""Stages 0 and 1, data: the corpus (given in any format `bert prepare-corpus` reads, or the embedded
default; minus held-out documents for the fine-tuning task) and `bert create-data` (TFRecord shards +
data_manifest.json)."""


from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output

from components.common import base_image


@dsl.component(base_image=base_image("data"), install_kfp_package=False)
def prepare_corpus(corpus_uri: str, corpus_format: str, heldout_fraction: float, seed: int, corpus_snapshot: str,
                   corpus: Output[Dataset], task_data: Output[Dataset], report: Output[Markdown],
                   html_report: Output[HTML], corpus_text_field: str = "text"):
    """Step 0. A user's corpus in any format `bert prepare-corpus` reads (Wikipedia dumps, JSON lines,
    plain text; compressed; local or object storage) goes through it unless it is BERT's format
    already; then the pretraining corpus (one sentence a line) and, from held-out documents, a
    single-sentence task (train/dev/test.tsv: which topic group does the sentence come from?) and
    heldout_documents.txt (the registry's held-out set is made from them). An empty corpus_uri means
    Python's own docs. `report`: what prepare-corpus dropped and why (Markdown); `html_report`: that
    too, with the corpus's sentence and document lengths and the held-out task's split sizes. corpus_snapshot (bert_core.lineage,
    from resolve-start) is only recorded: as an input it keys this step's cache, and so every data
    step's, on the corpus's contents rather than its URI."""
    import shutil
    import tempfile

    from bert_core import events, layout, storage
    from bert_core.corpus.prepare import needs_preparing
    from bert_core.data.heldout_task import split_corpus
    from bert_core.reports import corpus_report
    from components.common import prepare_corpus_config, run_stage, write_report

    prepared_report = None
    source, note = corpus_uri or None, "The embedded default corpus (Python's docs): nothing to prepare.\n"
    with tempfile.TemporaryDirectory(prefix="prepared-") as prepared:
        with events.reporting_errors("prepare-corpus"):
            preparing = bool(corpus_uri) and needs_preparing(corpus_uri, corpus_format)
        if preparing:
            run_stage("prepare-corpus", prepare_corpus_config(corpus_uri, corpus_format, prepared,
                                                             corpus_text_field))
            source = storage.join(prepared, layout.CORPUS_SHARD_GLOB)
            shutil.copyfile(storage.join(prepared, layout.CORPUS_REPORT_MARKDOWN), report.path)
            prepared_report = storage.read_json(storage.join(prepared, layout.CORPUS_REPORT_JSON))
            dropped = prepared_report["dropped"]
            corpus.metadata.update({f"dropped_{k}": v for k, v in dropped.items()})
        else:
            if corpus_uri:
                note = f"{corpus_uri}: BERT's format already (a sentence a line): read as it is.\n"
            with open(report.path, "w", encoding="utf-8") as f:
                f.write(note)
        with events.reporting_errors("prepare-corpus"):
            summary = split_corpus(corpus.path, task_data.path if heldout_fraction > 0 else None,
                                   corpus=source, heldout_fraction=heldout_fraction, seed=seed)
    if preparing:
        summary["corpus"]["source"] = corpus_uri
    corpus.metadata.update({**{k: v for k, v in summary["corpus"].items() if k != "path"},
                            "snapshot": corpus_snapshot})
    if "task" in summary:
        task_data.metadata.update({"documents": summary["task"]["documents"], **{
            f"{k}_examples": v for k, v in summary["task"]["examples"].items()}})
    write_report(html_report, corpus_report, [corpus.path], task_data.path if "task" in summary else None,
                 prepared_report, note.strip())


@dsl.component(base_image=base_image("data"), install_kfp_package=False)
def create_data(corpus: Input[Dataset], vocab: Input[Artifact], do_lower_case: bool, max_seq_length: int,
                max_predictions_per_seq: int, masked_lm_prob: float, dupe_factor: int, short_seq_prob: float,
                do_whole_word_mask: bool, num_shards: int, num_workers: int, random_seed: int,
                data: Output[Dataset], report: Output[HTML]):
    """`bert create-data`: masked-LM/NSP TFRecord shards and data_manifest.json; its counts as metadata,
    its statistics (sequence lengths, masked positions) as an HTML report."""
    from bert_core import layout, storage
    from bert_core.reports import data_report
    from components.common import create_data_config, run_stage, write_report

    config = create_data_config(
        corpus.path, vocab.path, data.path,
        do_lower_case=do_lower_case, max_seq_length=max_seq_length,
        max_predictions_per_seq=max_predictions_per_seq, masked_lm_prob=masked_lm_prob,
        dupe_factor=dupe_factor, short_seq_prob=short_seq_prob, do_whole_word_mask=do_whole_word_mask,
        num_shards=num_shards, num_workers=num_workers, random_seed=random_seed)
    run_stage("create-data", config)
    manifest = storage.read_json(storage.join(data.path, layout.DATA_MANIFEST))
    data.metadata.update({**manifest["totals"], "shards": len(manifest["shards"]),
                          "max_seq_length": max_seq_length, "max_predictions_per_seq": max_predictions_per_seq,
                          "vocab_size": manifest["vocab"]["size"]})
    write_report(report, data_report, data.path)
