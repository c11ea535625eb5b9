"""The HTML reports as a person sees them: each stage's page from real stage outputs, rendered by
headless Chromium (tests/browser.py), every plot there, drawn and labelled; `bert-pipeline artifacts
compare` on two real local runs lists exactly the parameters that differ (slow)."""

from __future__ import annotations

import glob
import html
import io
import json
import os
import subprocess
import sys

import pytest

from bert_core import layout, reports
from bert_core.reports import page, plots, sections
from tests import browser
from tests.conftest import ROOT, run_bert

pytestmark = pytest.mark.skipif(browser.chromium() is None, reason="no chromium (scripts/setup_env.sh --test installs it)")
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2"}


def _shot(tmp_path, name: str, html: str) -> browser.Shot:
    path = tmp_path / f"{name}.html"
    path.write_text(html, encoding="utf-8")
    return browser.render(path, tmp_path)


def _assert_plots(shot: browser.Shot, titles: list[str]) -> None:
    assert [p.title for p in shot.plots] == titles
    for plot in shot.plots:
        assert plot.xlabel and plot.ylabel, plot
        assert plot.alt == f"{plot.title}: {plot.ylabel} by {plot.xlabel}" and plot.caption.startswith(plot.title)
        assert plot.natural[0] > 100 and plot.box[2] > 100 and plot.box[3] > 100, plot  # decoded and laid out
        assert browser.is_drawn(shot.crop(plot)), plot


def test_a_blank_picture_is_told_from_a_drawn_one(tmp_path):
    """The check the other tests rely on: a white PNG of a plot's size is not a plot."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (520, 320), "white").save(buf, format="PNG")
    blank = plots.Figure("Blank", "x", "y", buf.getvalue())
    drawn = plots.lines("Drawn", "step", "loss", [("loss", [1, 2, 3], [3.0, 2.0, 1.5])])
    shot = _shot(tmp_path, "two", page.render("two", [page.figures([blank, drawn])]))
    assert [browser.is_drawn(shot.crop(p)) for p in shot.plots] == [False, True]


@pytest.fixture(scope="module")
def stage_outputs(tmp_path_factory, brown_corpus, uncased_vocab):
    """Real create-data and pretrain outputs: 40 Brown documents, bert-tiny for 30 steps."""
    tmp = tmp_path_factory.mktemp("stages")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n\n".join(open(brown_corpus, encoding="utf-8").read().split("\n\n")[:40]) + "\n")
    data, model = tmp / "data", tmp / "model"
    run_bert("create-data", f"--input_file={corpus}", f"--vocab_file={uncased_vocab}", f"--output_dir={data}",
             "--max_seq_length=32", "--max_predictions_per_seq=5", "--dupe_factor=2", "--num_shards=2",
             check=True, env=QUIET)
    run_bert("pretrain", f"--input_file={data}/train-*.tfrecord", f"--output_dir={model}", f"--vocab_file={uncased_vocab}",
             "--model=bert-tiny", "--max_seq_length=32", "--max_predictions_per_seq=5", "--train_batch_size=8",
             "--num_train_steps=30", "--num_warmup_steps=3", "--log_every_steps=5", "--do_train", "--do_eval",
             "--max_eval_steps=2", check=True, env=QUIET)
    return {"data": str(data), "model": str(model)}


@pytest.mark.parametrize("lower", [True, False])
def test_vocab_report_counts_what_the_tokenizer_does(brown_corpus, uncased_vocab, tmp_path, lower):
    """learn-vocab's numbers equal a direct count with the reference tokenizer (bert_core.tokenization's
    FullTokenizer, word by word) over the same first lines; cased text through the uncased vocab gives
    [UNK]s. The page in Chromium: both pictures drawn and labelled, the shares in its table."""
    import collections

    from bert_core import report_data
    from bert_core.tokenization import SPECIAL_TOKENS, UNK, FullTokenizer

    stats = report_data.vocab_statistics(uncased_vocab, [brown_corpus], lower, max_lines=400)
    tokens = open(uncased_vocab, encoding="utf-8").read().splitlines()
    assert stats["size"] == len(tokens) == 30522
    assert stats["special_tokens"] == {t: tokens.index(t) for t in SPECIAL_TOKENS}
    pieces = [t for t in tokens if t not in SPECIAL_TOKENS]
    starts = collections.Counter(len(t) for t in pieces if not (t.startswith("##") and len(t) > 2))
    conts = collections.Counter(len(t) - 2 for t in pieces if t.startswith("##") and len(t) > 2)
    assert stats["piece_lengths"] == {"word start": dict(starts), "continuation": dict(conts)}

    reference = FullTokenizer(uncased_vocab, do_lower_case=lower)
    lines = [line for line in open(brown_corpus, encoding="utf-8").read().splitlines() if line.strip()][:400]
    words = [w for line in lines for w in reference.basic_tokenizer.tokenize(line)]
    split = [reference.wordpiece_tokenizer.tokenize_word(w) for w in words]
    by_pieces = collections.Counter(len(p) for p in split)
    unk = sum(p == [UNK] for p in split)
    assert stats["sample_lines"] == 400 and stats["words"] == len(words) and stats["distinct_words"] == len(set(words))
    assert stats["pieces"] == sum(by_pieces[n] * n for n in by_pieces)
    assert stats["by_pieces"] == dict(by_pieces) and stats["unk_words"] == unk
    assert stats["split_rate"] == pytest.approx(sum(len(p) > 1 for p in split) / len(words))
    assert (unk > 100) == (not lower)  # the uncased vocab has no capitals: "The" is [UNK] when not lower-cased
    top = collections.Counter(w for w, p in zip(words, split) if len(p) > 1).most_common(1)[0]
    assert stats["split_examples"][0][1] == top[1]

    page_html = reports.vocab_report(uncased_vocab, [brown_corpus], lower, max_lines=400)
    assert f"{stats['unk_rate']:.2%} ({stats['unk_words']:,})" in page_html and "the first 400 lines of the corpus" in page_html
    _assert_plots(_shot(tmp_path, "vocab", page_html), ["WordPiece lengths", "Pieces per word"])


def test_create_data_report(stage_outputs, tmp_path):
    shot = _shot(tmp_path, "data", reports.data_report(stage_outputs["data"]))
    _assert_plots(shot, ["Sequence lengths", "Masked positions", "Instances per shard"])


def test_pretraining_report(stage_outputs, tmp_path):
    model = stage_outputs["model"]
    history = [json.loads(line) for line in open(layout.train_history_path(model))]
    assert [r["step"] for r in history] == [1, 5, 10, 15, 20, 25, 30]
    shot = _shot(tmp_path, "pretrain", reports.training_report(model, "pretrain"))
    _assert_plots(shot, ["Training loss", "Masked-LM accuracy", "Next-sentence accuracy", "Learning rate", "Throughput"])
    assert glob.glob(os.path.join(model, layout.SUMMARIES_DIR, "events.out.tfevents.*"))  # TensorBoard's, beside


def _eval(tmp_path, *flags) -> str:
    out = tmp_path / "metrics"
    run_bert("evaluate", *flags, f"--output_dir={out}", check=True)
    return str(out)


def test_evaluation_reports(tmp_path):
    from tests.test_eval_details import _tsv_task
    from tests.test_evaluate import SQUAD, _write

    (tmp_path / "binary").mkdir()
    config, _, _ = _tsv_task(tmp_path / "binary", ["neg", "pos"], 80, seed=4)
    binary = _eval(tmp_path / "binary", "--task_name=tsv", f"--data_dir={config.data_dir}", "--eval_split=test",
                   f"--predictions_file={config.predictions_file}", "--labels=neg,pos", "--text_a_column=sentence")
    shot = _shot(tmp_path, "binary", reports.evaluation_report(binary))
    _assert_plots(shot, ["Confusion matrix", "ROC curve"])

    (tmp_path / "sts").mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    (tmp_path / "sts" / "dev.tsv").write_text(header + "".join(f"{i}\tg\tf\ty\to\ts\ts\ta\tb\t{i % 5}\n" for i in range(40)))
    (tmp_path / "sts.txt").write_text("".join(f"{(i % 5) + 0.3 * ((i * 7) % 3 - 1)}\n" for i in range(40)))
    sts = _eval(tmp_path / "sts", "--task_name=sts-b", f"--data_dir={tmp_path / 'sts'}",
                f"--predictions_file={tmp_path / 'sts.txt'}")
    _assert_plots(_shot(tmp_path, "sts", reports.evaluation_report(sts)), ["Predicted vs gold"])

    gold = _write(tmp_path / "dev.json", SQUAD)
    preds = _write(tmp_path / "predictions.json", {"q1": "Denver Broncos", "q2": "Denver", "q3": ""})
    odds = _write(tmp_path / "null_odds.json", {"q1": -3.0, "q2": 0.5, "q3": -1.0})
    (tmp_path / "squad").mkdir()
    squad = _eval(tmp_path / "squad", "--task_name=squad2", f"--predict_file={gold}", f"--prediction_json={preds}",
                  f"--null_odds_json={odds}")
    _assert_plots(_shot(tmp_path, "squad", reports.evaluation_report(squad)),
                  ["EM and F1 by answer type", "Score over the no-answer threshold"])


# --------------------------------------------------------------------------------------------------
# Two real local runs, compared
# --------------------------------------------------------------------------------------------------
TINY = {"dupe_factor": 1, "num_train_steps": 40, "num_warmup_steps": 4, "log_every_steps": 10, "max_eval_steps": 2,
        "num_train_epochs": 1.0, "num_processes": 1, "vocab_size": 1000}


def _pipeline_run(out, **params) -> str:
    args = [f"--param={k}={v}" for k, v in {**TINY, **params}.items()]
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--output-dir", str(out), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    report = proc.stdout.strip().splitlines()[-1]
    assert report.endswith(layout.RUN_REPORT) and os.path.exists(report)
    return os.path.dirname(report)


@pytest.mark.slow
def test_compare_two_real_runs_lists_exactly_the_differing_parameters(tmp_path_factory, tmp_path):
    out = tmp_path_factory.mktemp("runs")
    a = _pipeline_run(out / "a")
    b = _pipeline_run(out / "b", learning_rate=1e-3, num_train_steps=60)
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "artifacts", "compare", a, b,
                           "--html", str(tmp_path / "compare.html")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("2 of ") and lines[0].endswith(" parameters differ:")
    listed = [line.split()[0] for line in lines[3:5]]
    assert sorted(listed) == ["learning_rate", "num_train_steps"] and lines[5] == ""
    assert any(line.split()[:3] == ["pretrain.global_step", "40", "60"] for line in lines)

    shot = browser.render(tmp_path / "compare.html", tmp_path)
    assert any(p.title == "pretrain: training loss" for p in shot.plots)
    for plot in shot.plots:
        assert plot.xlabel == "step" and browser.is_drawn(shot.crop(plot)), plot
    run = browser.render(os.path.join(a, layout.RUN_REPORT), tmp_path)
    assert {"create-data", "pretrain", "finetune", "evaluate"} <= set(run.headings)
    assert all(browser.is_drawn(run.crop(p)) for p in run.plots) and len(run.plots) >= 10


def test_a_report_that_cannot_be_drawn_is_a_page_saying_why(tmp_path, capsys):
    """The stage's outputs are published by then: the component writes a page naming the problem and
    logs a line, it does not fail the step."""
    from components.common import write_report

    class Artifact:
        path = str(tmp_path / "report")

    write_report(Artifact, reports.training_report, str(tmp_path / "no-such-model"), "pretrain")
    drawn = (tmp_path / "report").read_text()
    assert '<figure class="plot"' not in drawn and "no training history" in drawn  # an empty run: said so

    def broken(path):
        raise ValueError(f"{path}: cannot read")

    write_report(Artifact, broken, "gs://b/x")
    page_text = (tmp_path / "report").read_text()
    assert "the report could not be drawn: ValueError: gs://b/x: cannot read" in page_text
    assert "warning: the report could not be drawn" in capsys.readouterr().out


def test_the_run_page_orders_parameters_and_tells_the_splits_apart(tmp_path):
    """Parameters by name (run.json keeps the pipeline's order, which is no order for a reader); the
    summary says fine-tuning's eval.* and evaluate's numbers come from different splits."""
    from bert_core import storage
    from bert_core.reports import runs

    run = tmp_path / "run"
    storage.write_json(str(run / "finetune" / "model" / layout.FINETUNE_METRICS), {"eval": {"accuracy": 0.75}})
    storage.write_json(str(run / "evaluate" / "metrics" / layout.EVAL_METRICS), {"accuracy": 0.7})
    storage.write_json(str(run / "evaluate" / "metrics" / layout.EVAL_DETAILS), {})
    storage.write_json(str(run / layout.RUN_RECORD), {"parameters": {"vocab_size": 2000, "eval_split": "test",
                                                                     "bert_model": "bert-tiny"}})
    assert list(runs.parameters(str(run))) == ["bert_model", "eval_split", "vocab_size"]
    note = runs.headline_note(runs.find_stages(str(run)), runs.read_record(str(run)))
    assert note == "finetune's eval.* are on the task's dev split, evaluate's on its test split"
    assert html.escape(note) in reports.run_report(str(run))
    assert runs.headline_note(runs.find_stages(str(run / "evaluate")), {}) == ""


def test_the_tensorboard_line_says_how_for_s3():
    from bert_core.reports.sections import tensorboard_note

    assert tensorboard_note("gs://b/run/pretrain/model/train") == "TensorBoard: tensorboard --logdir gs://b/run/pretrain/model/train"
    for uri in ("s3://b/m/train", "minio://b/m/train"):
        assert tensorboard_note(uri).startswith(f"TensorBoard: tensorboard --logdir {uri} (a TensorBoard installed without")


def test_a_runs_stages_are_found_by_their_files_in_run_order(tmp_path):
    """Named by their step's directory (the two-phase pipeline's two pretraining steps apart), at any
    depth under it (a cluster's pipeline root may add a level), in the order the stages run."""
    from bert_core import storage
    from bert_core.errors import UserError
    from bert_core.reports import runs

    for rel, name in (("evaluate/metrics", layout.EVAL_DETAILS), ("learn-vocab", runs.VOCAB_OUTPUT), ("prepare-corpus", runs.CORPUS_OUTPUT), ("pretrain-phase2/123/model", layout.PRETRAIN_METRICS),
                      ("finetune/model", layout.FINETUNE_METRICS), ("pretrain/model", layout.PRETRAIN_METRICS),
                      ("create-data-2/456/data", layout.DATA_MANIFEST), ("create-data/data", layout.DATA_MANIFEST)):
        storage.write_json(str(tmp_path / "run" / rel / name), {})
    found = [(s.name, s.kind) for s in runs.find_stages(str(tmp_path / "run"))]
    assert found == [("prepare-corpus", "corpus"), ("learn-vocab", "vocab"), ("create-data", "data"), ("create-data-2", "data"), ("pretrain", "pretrain"),
                     ("pretrain-phase2", "pretrain"), ("finetune", "finetune"), ("evaluate", "evaluate")]
    with pytest.raises(UserError, match="no stage outputs there"):
        runs.find_stages(str(tmp_path / "run" / "finetune" / "nothing"))


def test_corpus_report_counts_the_prepared_corpus(brown_corpus, tmp_path):
    """The corpus step's numbers equal a direct count over a real prepared corpus (Brown, plus a repeated
    document and a one-sentence one that `bert prepare-corpus` drops), then split with a held-out task
    as the pipeline's step does; the page in Chromium: both histograms drawn and labelled, the split
    sizes and the drops with their examples in its tables."""
    import collections

    from bert_core import report_data
    from bert_core.data.heldout_task import split_corpus

    text = open(brown_corpus, encoding="utf-8").read()
    first = text.split("\n\n")[0].strip()
    (tmp_path / "in.txt").write_text(f"{text.rstrip()}\n\n{first}\n\nOne sentence only here, as a document.\n",
                                     encoding="utf-8")
    run_bert("prepare-corpus", f"--input_file={tmp_path / 'in.txt'}", f"--output_dir={tmp_path / 'prepared'}", check=True)
    prepared = json.loads((tmp_path / "prepared" / "corpus_report.json").read_text())
    assert prepared["dropped"] == {"duplicate": 1, "too_few_sentences": 1}
    corpus, task = str(tmp_path / "corpus"), str(tmp_path / "task")
    summary = split_corpus(corpus, task, corpus=str(tmp_path / "prepared" / "corpus-*.txt"), heldout_fraction=0.3, seed=7)

    docs = [[s for s in block.split("\n") if s.strip()] for block in open(corpus, encoding="utf-8").read().split("\n\n")]
    docs = [d for d in docs if d]
    stats = report_data.corpus_statistics([corpus], task)
    assert stats["documents"] == len(docs) == summary["corpus"]["documents"]
    assert stats["sentences"] == sum(map(len, docs)) == summary["corpus"]["sentences"]
    assert stats["sentence_tokens"] == dict(collections.Counter(len(s.split()) for d in docs for s in d))
    assert stats["document_sentences"] == dict(collections.Counter(map(len, docs)))
    examples = {name: len(open(os.path.join(task, f"{name}.tsv"), encoding="utf-8").read().splitlines()) - 1
                for name in ("train", "dev", "test")}  # less the header
    assert stats["task"]["examples"] == examples == summary["task"]["examples"] and min(examples.values()) > 100
    assert stats["task"]["documents"] + len(docs) == prepared["documents_out"] and not stats["sampled"]
    # report.html and compare read at most a cap of documents of a run's corpus, and say so
    capped = report_data.corpus_statistics([corpus], task, max_documents=10)
    assert capped["sampled"] and capped["documents"] == 10 and capped["sentences"] == sum(map(len, docs[:10]))
    assert report_data.corpus_statistics([corpus], task, max_documents=len(docs))["sampled"] is False
    assert "first 10 documents" in "".join(sections.corpus_blocks([corpus], task, max_documents=10))

    page_html = reports.corpus_report([corpus], task, prepared)
    shot = _shot(tmp_path, "corpus", page_html)
    _assert_plots(shot, ["Sentence lengths", "Document lengths"])
    assert [p.ylabel for p in shot.plots] == ["sentences", "documents"]
    for name, n in examples.items():
        split_docs = page.cell(summary["task"]["documents_per_split"][name])
        assert f'<td>{name}</td><td class="num">{split_docs}</td><td class="num">{page.cell(n)}</td>' in page_html
    assert "too_few_sentences" in page_html and html.escape("One sentence only here") in page_html
    assert html.escape(prepared["examples"]["duplicate"][0]["where"]) in page_html

    from bert_core.reports import runs  # the run's page: a prepare-corpus section found by its corpus file

    step = tmp_path / "run" / "prepare-corpus"
    step.mkdir(parents=True)
    os.rename(corpus, step / runs.CORPUS_OUTPUT)
    os.rename(task, step / runs.TASK_OUTPUT)
    run_shot = _shot(tmp_path, "run", reports.run_report(str(tmp_path / "run")))
    assert "prepare-corpus" in run_shot.headings
    _assert_plots(run_shot, ["Sentence lengths", "Document lengths"])
    assert runs.headline(runs.find_stages(str(tmp_path / "run"))) == [
        ["prepare-corpus", "documents", len(docs)], ["prepare-corpus", "sentences", stats["sentences"]]]
    corpus = str(step / runs.CORPUS_OUTPUT)

    unprepared = reports.corpus_report([corpus], None, None, "given in BERT's format: read as it is")
    assert "given in BERT&#x27;s format: read as it is" in unprepared and "no held-out task" in unprepared
