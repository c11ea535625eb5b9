"""A user's own task (bert_core.tasks): the worked example examples/tasks/movie_reviews.py (real movie
-review snippets, examples/tasks/movie_reviews_data) fine-tuned and evaluated by `bert finetune` and
`bert evaluate` with --task_module; the module given as a file, a module name, an object-storage URI
or an installed entry point; and every mistake in a module as one line."""

from __future__ import annotations

import json
import os
import pathlib
import textwrap

import numpy as np
import pytest

from bert_core import tasks
from bert_core.errors import UserError
from tests.conftest import ROOT, one_line_error, run_bert
from tests.tiny_bert import tiny_config

from s3_server import s3, s3_prefix  # noqa: E402,F401  (fixtures)

EXAMPLE = ROOT / "examples" / "tasks" / "movie_reviews.py"
DATA = ROOT / "examples" / "tasks" / "movie_reviews_data"
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "2"}


def gold(split: str) -> list[str]:
    """The example's labels of a split, read from the data file here, not by the processor: id mod 10
    is 8 for dev, 9 for test; the sign of the rating is the label; a 0 rating is left out."""
    want = {"dev": {8}, "test": {9}, "train": set(range(8))}[split]
    out = []
    for line in (DATA / "movieReviewSnippets_GroundTruth.txt").read_text(encoding="utf-8").splitlines():
        snippet_id, rating, _ = line.split("\t")
        if float(rating) != 0 and int(snippet_id) % 10 in want:
            out.append("pos" if float(rating) > 0 else "neg")
    return out


def test_the_example_module_reads_the_real_snippets():
    task = tasks.get_task("movie_reviews", str(EXAMPLE))
    assert task.labels == ["neg", "pos"] and not task.is_regression
    for split in ("train", "dev", "test"):
        examples = task.get_examples(str(DATA), split)
        assert [e.label for e in examples] == gold(split)
    first = task.get_examples(str(DATA), "train")[0]
    assert first.text_a.startswith("The Rock is destined to be the 21st Century's new ''Conan''")
    assert (len(gold("train")), len(gold("dev")), len(gold("test"))) == (478, 59, 60)


def test_finetune_and_evaluate_a_task_module(tmp_path, uncased_vocab):
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps(tiny_config(vocab_size=30522)))
    out = tmp_path / "out"
    task = [f"--task_module={EXAMPLE}", "--task_name=movie_reviews", f"--data_dir={DATA}"]
    proc = run_bert("finetune", *task, f"--vocab_file={uncased_vocab}", f"--bert_config_file={config}",
                    f"--output_dir={out}", "--max_seq_length=32", "--train_batch_size=32", "--learning_rate=1e-3",
                    "--num_train_epochs=2", "--do_train", "--do_eval", "--do_predict", env=QUIET)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 478 training examples in updates of 32: int(478 / 32 * 2) = 29 updates.
    assert "fine-tuning movie_reviews: 478 training examples" in proc.stdout and "29 updates of 32" in proc.stdout
    results = json.loads((out / "eval_results.json").read_text())
    assert results["global_step"] == 29 and results["num_examples"] == len(gold("dev")) == 59
    assert 0 <= results["accuracy"] <= 1 and np.isfinite(results["eval_loss"])
    probs = np.array([[float(x) for x in line.split("\t")] for line in
                      (out / "test_results.tsv").read_text().splitlines()])
    assert probs.shape == (60, 2) and np.allclose(probs.sum(1), 1.0, atol=1e-6)
    metrics = json.loads((out / "finetune_metrics.json").read_text())
    assert metrics["task_name"] == "movie_reviews" and metrics["global_step"] == 29

    # bert evaluate scores the test predictions against the processor's test labels: the accuracy
    # is the one of argmax (labels in get_labels() order: neg, pos) against the file's signs.
    ev = run_bert("evaluate", *task, "--eval_split=test", f"--predictions_file={out}/test_results.tsv",
                  f"--output_dir={tmp_path}/ev", env=QUIET)
    assert ev.returncode == 0, ev.stderr
    expected = np.mean(np.array(["neg", "pos"])[probs.argmax(1)] == np.array(gold("test")))
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text()) == {"accuracy": pytest.approx(expected)}
    assert "movie_reviews" in ev.stdout


def test_module_name_and_object_storage_uri(monkeypatch, s3_prefix):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    by_name = tasks.get_task("movie_reviews", "movie_reviews")
    assert [e.label for e in by_name.get_examples(str(DATA), "dev")] == gold("dev")

    # An object-storage URI is read through bert_core.storage (here from a local S3 server).
    from bert_core import storage

    uri = f"{s3_prefix}/modules/movie_reviews.py"
    storage.write_bytes(uri, EXAMPLE.read_bytes())
    by_uri = tasks.get_task("movie_reviews", uri)
    assert [e.label for e in by_uri.get_examples(str(DATA), "test")] == gold("test")
    with pytest.raises(UserError, match=r"--task_module=s3://.*/nope\.py: no such file"):
        tasks.get_task("movie_reviews", f"{s3_prefix}/modules/nope.py")


def test_an_installed_entry_point_needs_no_task_module(tmp_path):
    """A package's entry point in the group bert_kubeflow.tasks names the processor; its name is a
    --task_name the config accepts and the stages read."""
    site = tmp_path / "site"
    dist = site / "movie_tasks-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: movie-tasks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{tasks.ENTRY_POINT_GROUP}]\nmovies = movie_reviews:MovieReviewsProcessor\n")
    (site / "movie_reviews.py").write_text(EXAMPLE.read_text())
    probs = tmp_path / "preds.tsv"
    probs.write_text("pos\n" * len(gold("test")))
    env = {**QUIET, "PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}
    ev = run_bert("evaluate", "--task_name=movies", f"--data_dir={DATA}", "--eval_split=test",
                  f"--predictions_file={probs}", f"--output_dir={tmp_path}/ev", env=env)
    assert ev.returncode == 0, ev.stderr
    share = gold("test").count("pos") / len(gold("test"))
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["accuracy"] == pytest.approx(share)
    # Without the package the name is unknown, and the error says a --task_module could name it.
    line = one_line_error(run_bert("evaluate", "--task_name=movies", f"--data_dir={DATA}",
                                   f"--predictions_file={probs}", f"--output_dir={tmp_path}/ev2", env=QUIET))
    assert "unknown task" in line and "or a task of --task_module (got 'movies')" in line


def write_module(tmp_path: pathlib.Path, body: str, name: str = "my_tasks.py") -> str:
    path = tmp_path / name
    path.write_text("from bert_core.tasks import DataProcessor, InputExample, register\n\n"
                    + textwrap.dedent(body))
    return str(path)


PROCESSOR = """
    @register("mine")
    class Mine(DataProcessor):
        def get_labels(self):
            return {labels}
        def get_train_examples(self, data_dir):
            {train}
        def get_dev_examples(self, data_dir):
            return []
        def get_test_examples(self, data_dir):
            return []
"""


@pytest.mark.parametrize("body, split, error", [
    ("x = 1\n", None, r"my_tasks\.py: registers no task \(decorate a DataProcessor subclass with "
                      r"@bert_core\.tasks\.register\(\"name\"\)\)"),
    ("raise RuntimeError('no network\\nsecond line')\n", None,
     r"my_tasks\.py: importing it failed: RuntimeError: no network$"),
    ("@register('mine')\nclass Mine(DataProcessor.__base__):\n    def get_labels(self): return ['a', 'b']\n", None,
     r"'Mine' is not a DataProcessor: it has no get_train_examples, get_dev_examples, get_test_examples"),
    ("@register('mrpc')\nclass Mine(DataProcessor): pass\n", None,
     r"task name 'mrpc' is a built-in task; register it under another name"),
    ("@register('SST2')\nclass Mine(DataProcessor): pass\n", None,  # an alias of sst-2
     r"task name 'SST2' is a built-in task; register it under another name"),
    (PROCESSOR.format(labels="['only']", train="return []"), None,
     r"Mine\.get_labels\(\) returned \['only'\]; expected a list of at least 2 distinct label strings"),
    (PROCESSOR.format(labels="['a', 'b']", train="raise FileNotFoundError(data_dir + '/train.csv')"), "train",
     r"Mine\.get_train_examples\('d'\) failed: FileNotFoundError: d/train\.csv"),
    (PROCESSOR.format(labels="['a', 'b']", train="return [InputExample('1', 'text', None, 'c')]"), "train",
     r"Mine\.get_train_examples\('d'\): example 0 \(guid '1'\): label 'c' is not one of get_labels\(\) \['a', 'b'\]"),
    (PROCESSOR.format(labels="['a', 'b']", train="return [InputExample('1', 7, None, 'a')]"), "train",
     r"Mine\.get_train_examples\('d'\): example 0 .* needs text_a \(and text_b, if any\) as strings"),
])
def test_mistakes_in_a_module_are_one_line(tmp_path, body, split, error):
    module = write_module(tmp_path, body)
    with pytest.raises(UserError, match=error) as raised:
        task = tasks.get_task("mine", module)
        task.get_examples("d", split)
    assert "\n" not in str(raised.value)


def test_cli_errors_name_the_module(tmp_path, uncased_vocab):
    missing = run_bert("finetune", "--task_module=nowhere/my_tasks.py", "--task_name=mine", "--data_dir=d",
                       f"--vocab_file={uncased_vocab}", "--model=bert-tiny", f"--output_dir={tmp_path}/o",
                       "--do_train", env=QUIET)
    assert one_line_error(missing) == "bert: error: --task_module=nowhere/my_tasks.py: no such file"
    other = run_bert("evaluate", f"--task_module={EXAMPLE}", "--task_name=movies", f"--data_dir={DATA}",
                     f"--predictions_file={EXAMPLE}", f"--output_dir={tmp_path}/ev", env=QUIET)
    assert one_line_error(other) == (f"bert: error: --task_name=movies: --task_module={EXAMPLE} registers "
                                     f"movie_reviews")
    no_module = run_bert("evaluate", "--task_module=no_such_tasks_module", "--task_name=x", f"--data_dir={DATA}",
                         f"--predictions_file={EXAMPLE}", f"--output_dir={tmp_path}/ev", env=QUIET)
    assert one_line_error(no_module) == ("bert: error: --task_module=no_such_tasks_module: no such file or "
                                         "importable module")


@pytest.mark.slow
def test_a_local_pipeline_run_with_a_task_module(tmp_path):
    """`bert-pipeline run` with task_module, task_name and task_data_uri: finetune and evaluate read the
    example's processor (a path the local steps see, as a gs:// URI on a cluster), and evaluate scores
    exactly finetune's test predictions against the processor's test labels."""
    import glob
    import subprocess
    import sys

    params = {"task_module": EXAMPLE, "task_name": "movie_reviews", "task_data_uri": DATA, "eval_split": "test",
              "num_train_steps": 100, "num_warmup_steps": 10, "num_processes": 1, "num_train_epochs": 1.0,
              "finetune_max_seq_length": 32}
    cmd = [sys.executable, "-m", "pipelines.cli", "run", "--ci", "--output-dir", str(tmp_path)]
    for name, value in params.items():
        cmd += ["-p", f"{name}={value}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (run_dir,) = glob.glob(str(tmp_path / "bert-pipeline-*"))
    probs = np.array([[float(x) for x in line.split("\t")] for line in
                      open(os.path.join(run_dir, "finetune", "predictions")).read().splitlines()])
    assert probs.shape == (len(gold("test")), 2)
    metrics = json.loads(open(os.path.join(run_dir, "evaluate", "metrics", "metrics.json")).read())
    expected = np.mean(np.array(["neg", "pos"])[probs.argmax(1)] == np.array(gold("test")))
    assert metrics == {"accuracy": pytest.approx(expected)}
    assert "## Evaluation: movie_reviews" in open(os.path.join(run_dir, "evaluate", "report")).read()
