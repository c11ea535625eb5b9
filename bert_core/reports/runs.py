"""A pipeline run as a whole: its stages found by the files they left, its parameters and lineage
(the run record `bert-pipeline run` writes, layout.RUN_RECORD), the numbers a person reads, one page
for the run and one comparing runs.

A run directory holds one directory per step and under it the step's outputs (KFP's layout, locally
under kfp.local and under a pipeline root in object storage alike): run/create-data/data/data_manifest.json,
run/pretrain/model/pretrain_metrics.json, ... A stage is found by the file its kind leaves (STAGE_FILES)
and named by its step's directory, so a run of the two-phase pipeline shows both pretraining steps.
"""

from __future__ import annotations

import dataclasses

from bert_core import layout, report_data, storage
from bert_core.errors import UserError
from bert_core.reports import page, plots, sections

#: report.html and `artifacts compare` read at most this many documents of a run's corpus (the corpus
#: step's own report reads all of it, as the step does anyway).
RUN_CORPUS_DOCUMENTS = 100_000
#: learn-vocab's and prepare-corpus's outputs are single files, which KFP names after the output.
VOCAB_OUTPUT, CORPUS_OUTPUT = "vocab", "corpus"
#: the corpus step's held-out task: a directory beside its corpus.
TASK_OUTPUT = "task_data"
#: {the file a stage's output holds: its kind}, in the order the stages run.
STAGE_FILES = {CORPUS_OUTPUT: "corpus", VOCAB_OUTPUT: "vocab", layout.DATA_MANIFEST: "data", layout.PRETRAIN_METRICS: "pretrain",
               layout.FINETUNE_METRICS: "finetune", layout.EVAL_DETAILS: "evaluate"}
_ORDER = list(STAGE_FILES.values())

@dataclasses.dataclass(frozen=True)
class Stage:
    name: str   # the step's name (its directory in the run), e.g. pretrain-phase2
    kind: str   # corpus, vocab, data, pretrain, finetune, evaluate
    path: str   # the output directory holding the stage's files


def find_stages(run_dir: str) -> list[Stage]:
    """The stages of a run directory, in the order they run (then by name)."""
    base = run_dir.rstrip("/")
    found: dict[str, Stage] = {}
    for info in storage.list_files(base):
        rel = info.path[len(base) + 1:]
        parts = rel.split("/")
        kind = STAGE_FILES.get(parts[-1])
        if kind is None:
            continue
        path = storage.dirname(info.path)
        name = parts[0] if len(parts) > 1 else kind
        found.setdefault(path, Stage(name, kind, path))
    if not found:
        raise UserError(f"{run_dir}: no stage outputs there (expected a run directory with "
                        f"{', '.join(STAGE_FILES)} in its steps' outputs)")
    return sorted(found.values(), key=lambda s: (_ORDER.index(s.kind), s.name))


def read_record(run_dir: str) -> dict:
    """The run record (parameters, lineage), or {} for a run `bert-pipeline run` did not make."""
    path = storage.join(run_dir, layout.RUN_RECORD)
    return storage.read_json(path) if storage.exists(path) else {}


def stage_numbers(stage: Stage) -> dict:
    """Every number a stage recorded, keys dotted (a training stage's metrics file, evaluate's
    metrics.json, the data manifest's totals)."""
    if stage.kind == "corpus":
        stats = report_data.corpus_statistics([storage.join(stage.path, CORPUS_OUTPUT)],
                                              max_documents=RUN_CORPUS_DOCUMENTS)
        doc = {} if stats["sampled"] else {k: stats[k] for k in ("documents", "sentences", "tokens")}
    elif stage.kind == "vocab":
        from bert_core.tokenization import load_vocab

        doc = {"size": len(load_vocab(storage.join(stage.path, VOCAB_OUTPUT)))}
    elif stage.kind == "data":
        doc = storage.read_json(storage.join(stage.path, layout.DATA_MANIFEST)).get("totals", {})
    elif stage.kind == "evaluate":
        doc = storage.read_json(storage.join(stage.path, layout.EVAL_METRICS))
    else:
        name = layout.PRETRAIN_METRICS if stage.kind == "pretrain" else layout.FINETUNE_METRICS
        doc = storage.read_json(storage.join(stage.path, name))
    return {k: v for k, v in sections.flat(doc).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def headline(stages: list[Stage]) -> list[list]:
    """[stage, metric, value] rows of the numbers a person reads: evaluate's every metric, the others'
    sections.HEADLINE keys."""
    rows = []
    for stage in stages:
        numbers = stage_numbers(stage)
        keys = list(numbers) if stage.kind == "evaluate" else [k for k in sections.HEADLINE[stage.kind] if k in numbers]
        rows += [[stage.name, key, numbers[key]] for key in keys]
    return rows


def headline_note(stages: list[Stage], record: dict) -> str:
    """What the headline table cannot say in its rows: fine-tuning's eval.* numbers and evaluate's
    come from different splits of the task (so they differ)."""
    kinds = {s.kind for s in stages}
    if not {"finetune", "evaluate"} <= kinds:
        return ""
    split = record.get("parameters", {}).get("eval_split")
    return f"finetune's eval.* are on the task's dev split, evaluate's on its {split or 'evaluation'} split"


def parameters(run_dir: str) -> dict:
    """The run's parameters: the run record's, or else what its stages recorded (create-data's
    manifest parameters, a training stage's settings), as `stage.name`."""
    record = read_record(run_dir)
    if "parameters" in record:
        return dict(sorted(record["parameters"].items()))
    out: dict = {}
    for stage in find_stages(run_dir):
        if stage.kind == "data":
            doc = storage.read_json(storage.join(stage.path, layout.DATA_MANIFEST)).get("parameters", {})
        elif stage.kind in ("pretrain", "finetune"):
            name = layout.PRETRAIN_METRICS if stage.kind == "pretrain" else layout.FINETUNE_METRICS
            doc = {k: v for k, v in storage.read_json(storage.join(stage.path, name)).items()
                   if k in ("world_size", "dtype", "xla", "train_batch_size_per_rank", "num_accumulation_steps",
                            "global_batch_size", "task_name", "num_train_epochs")}
        else:
            continue
        out.update({f"{stage.name}.{k}": v for k, v in doc.items() if not isinstance(v, (dict, list))})
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------------
# One run's page
# --------------------------------------------------------------------------------------------------
def _stage_blocks(stage: Stage, run_dir: str, record: dict) -> list[str]:
    if stage.kind == "corpus":
        return sections.corpus_blocks([storage.join(stage.path, CORPUS_OUTPUT)], storage.join(stage.path, TASK_OUTPUT),
                                      unprepared_note="what prepare-corpus dropped, if it ran, is in the step's own "
                                                      "reports (html_report, report)",
                                      max_documents=RUN_CORPUS_DOCUMENTS)
    if stage.kind == "vocab":
        return _vocab_blocks(stage, run_dir, record)
    if stage.kind == "data":
        return sections.data_blocks(stage.path)
    if stage.kind == "evaluate":
        return sections.evaluation_blocks(stage.path)
    return sections.training_blocks(stage.path, stage.name)


def _vocab_blocks(stage: Stage, run_dir: str, record: dict) -> list[str]:
    """The vocab over the run's corpus (prepare-corpus's output), tokenized with the run's
    do_lower_case, or as the vocab's case says when the run has no record."""
    vocab = storage.join(stage.path, VOCAB_OUTPUT)
    base = run_dir.rstrip("/")
    corpus = sorted(i.path for i in storage.list_files(base) if storage.basename(i.path) == CORPUS_OUTPUT)[:1]
    lower = record.get("parameters", {}).get("do_lower_case")
    if not isinstance(lower, bool):
        lower = not report_data.vocab_is_cased(vocab)
    return sections.vocab_blocks(vocab, corpus, lower)


def run_page(run_dir: str) -> str:
    stages = find_stages(run_dir)
    record = read_record(run_dir)
    blocks = [page.heading("Summary"), page.table(["stage", "metric", "value"], headline(stages)),
              page.note(headline_note(stages, record)) if headline_note(stages, record) else ""]
    for stage in stages:
        blocks += [page.heading(stage.name, anchor=stage.name), page.note(stage.path), *_stage_blocks(stage, run_dir, record)]
    params = parameters(run_dir)
    if params:
        blocks += [page.heading("Parameters"), page.table(["parameter", "value"], [[k, v] for k, v in params.items()])]
    if record.get("lineage"):
        blocks += [page.heading("Lineage"),
                   page.table(["artifact", "made by", "used by"],
                              [[r["artifact"], r["producer"], ", ".join(r["consumers"]) or "-"]
                               for r in record["lineage"]])]
    return page.render(record.get("pipeline", "pipeline run"), blocks, subtitle=run_dir)


# --------------------------------------------------------------------------------------------------
# Comparing runs
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Comparison:
    names: list[str]                 # a short name per run (its directory's name)
    parameters: list[list]           # [name, value per run]
    differing: list[bool]            # per parameter row: not the same in every run
    metrics: list[list]              # [stage.metric, value per run]
    stages: list[list[Stage]]        # per run


def compare(run_dirs: list[str]) -> Comparison:
    if len(run_dirs) < 2:
        raise UserError("compare: give two runs or more")
    names = _short_names(run_dirs)
    stages = [find_stages(d) for d in run_dirs]
    params = [parameters(d) for d in run_dirs]
    keys = list(dict.fromkeys(k for p in params for k in p))
    rows = [[k, *(p.get(k) for p in params)] for k in keys]
    differing = [any(v != row[1] for v in row[2:]) for row in rows]
    metric_rows: dict[str, list] = {}
    for i, run in enumerate(stages):
        for stage_name, key, value in headline(run):
            metric_rows.setdefault(f"{stage_name}.{key}", [None] * len(run_dirs))[i] = value
    return Comparison(names, rows, differing, [[k, *v] for k, v in metric_rows.items()], stages)


def _short_names(run_dirs: list[str]) -> list[str]:
    names = [storage.basename(d.rstrip("/")) or d for d in run_dirs]
    return names if len(set(names)) == len(names) else list(run_dirs)


def compare_text(c: Comparison) -> str:
    """The parameters that differ and the headline metrics, runs side by side."""
    from bert_core.artifacts import render_table

    differ = [row for row, d in zip(c.parameters, c.differing) if d]
    parts = [f"{len(differ)} of {len(c.parameters)} parameters differ" + (":" if differ else "")]
    if differ:
        parts.append(render_table(["parameter", *c.names], differ))
    parts += ["", render_table(["metric", *c.names], c.metrics)]
    return "\n".join(parts)


def compare_page(c: Comparison) -> str:
    blocks = [page.heading("Parameters"),
              page.note(f"{sum(c.differing)} of {len(c.parameters)} differ (highlighted)"),
              page.table(["parameter", *c.names], c.parameters, highlight=c.differing),
              page.heading("Metrics"), page.table(["metric", *c.names], c.metrics)]
    figs = []
    training = list(dict.fromkeys(s.name for run in c.stages for s in run if s.kind in ("pretrain", "finetune")))
    for stage_name in training:
        histories = []
        for name, run in zip(c.names, c.stages):
            stage = next((s for s in run if s.name == stage_name), None)
            if stage is not None:
                histories.append((name, report_data.read_history(layout.train_history_path(stage.path))))
        for title, ylabel, curves in sections.TRAINING_CURVES:
            key = curves[0][1]  # the main curve of each picture, one line per run
            drawn = [(name, *sections.curve(h, key)) for name, h in histories]
            drawn = [(name, x, y) for name, x, y in drawn if x]
            if drawn:
                figs.append(plots.lines(f"{stage_name}: {title.lower()}", "step", ylabel, drawn,
                                        caption=f"{curves[0][0]}, one line per run"))
    if figs:
        blocks += [page.heading("Curves"), page.figures(figs)]
    return page.render("Runs compared", blocks, subtitle=" vs ".join(c.names))
