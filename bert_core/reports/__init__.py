"""Reports people look at: one standalone HTML page per stage, one per run, one comparing runs.

    html = corpus_report(corpus_files, task_dir, prepared)  # the corpus step (prepare-corpus + held-out split)
    html = vocab_report(vocab_file, corpus_files, do_lower_case)  # learn-vocab
    html = data_report(data_dir)                   # create-data
    html = training_report(model_dir, "pretrain")  # pretrain, pretrain-phase2, finetune
    html = evaluation_report(metrics_dir)          # evaluate
    html = run_report(run_dir)                     # every stage of a run (bert-pipeline run)
    html = compare_report([run_a, run_b])          # runs side by side, curves overlaid

Paths may be local or object storage (bert_core.storage). The stage components write these pages as
KFP HTML artifacts; the pictures are matplotlib PNGs embedded in the page (bert_core.reports.plots),
from the numbers bert_core.report_data reads. Nothing here is imported on the training path.
"""

from __future__ import annotations

from bert_core.reports import page, sections


def corpus_report(corpus_files: list[str], task_dir: str | None = None, prepared: dict | None = None,
                  unprepared_note: str = "") -> str:
    blocks = sections.corpus_blocks(corpus_files, task_dir, prepared, unprepared_note)
    return page.render("prepare-corpus", [page.heading("Corpus"), *blocks], subtitle=", ".join(corpus_files))


def vocab_report(vocab_file: str, corpus_files: list[str], do_lower_case: bool, max_lines: int = 5000) -> str:
    blocks = sections.vocab_blocks(vocab_file, corpus_files, do_lower_case, max_lines)
    return page.render("learn-vocab", [page.heading("Vocabulary"), *blocks], subtitle=vocab_file)


def data_report(data_dir: str) -> str:
    return page.render("create-data", [page.heading("Training data"), *sections.data_blocks(data_dir)], subtitle=data_dir)


def training_report(model_dir: str, stage: str) -> str:
    return page.render(stage, [page.heading("Training"), *sections.training_blocks(model_dir, stage)], subtitle=model_dir)


def evaluation_report(metrics_dir: str) -> str:
    return page.render("evaluate", [page.heading("Evaluation"), *sections.evaluation_blocks(metrics_dir)], subtitle=metrics_dir)


def write_html(path: str, html: str) -> str:
    """Write a page (atomically, local or object storage); returns the path."""
    from bert_core import storage

    storage.write_text(path, html)
    return path


def run_report(run_dir: str) -> str:
    from bert_core.reports.runs import run_page

    return run_page(run_dir)


def compare_report(run_dirs: list[str]) -> str:
    from bert_core.reports.runs import compare, compare_page

    return compare_page(compare(run_dirs))
