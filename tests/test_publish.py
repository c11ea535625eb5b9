"""`bert publish` with real models: three scheduled runs in a row on a registry on a local directory,
gs:// (fake-gcs-server) and s3:// (moto): the first is published, the second continues from it and is
published when the gate passes, a deliberately worse third (an untrained model) is kept as a rejected
version with its reason; rollback; two `bert publish` processes finishing together (one wins, the other
says it lost and to which version); a changed vocab is refused in one line; a publisher SIGKILLed
mid-publish leaves the previous version published and the registry readable. Both models are scored
on the registry's pinned held-out set, made once from the corpus's held-out documents."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bert_core import layout, registry, storage
from conftest import ROOT, one_line_error, run_bert
from gcs_server import gcs, gcs_prefix  # noqa: F401
from s3_server import s3, s3_prefix  # noqa: F401
from tiny_bert import launcher_env

SHAPE = ["--max_seq_length=64", "--max_predictions_per_seq=10"]  # the data, the models and the held-out set
RULE = "masked-LM loss not worse"


def _bert(*args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "bert_core.cli", *args], capture_output=True, text=True,
                          env=launcher_env(), cwd=ROOT, timeout=timeout)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The corpus split (pretraining corpus + held-out task with heldout_documents.txt), a vocab, the
    shards, and three pretraining runs: `first` (from scratch), `second` (continued from `first`),
    `worse` (one step at a learning rate of 1e-9: untrained)."""
    from bert_core.data.heldout_task import split_corpus

    root = tmp_path_factory.mktemp("publish")
    split_corpus(str(root / "corpus.txt"), str(root / "task"))
    assert (root / "task" / layout.HELDOUT_DOCUMENTS).stat().st_size > 1000
    _bert("learn-vocab", f"--input_file={root / 'corpus.txt'}", f"--output_file={root / 'vocab.txt'}",
          "--vocab_size=1000")
    _bert("create-data", f"--input_file={root / 'corpus.txt'}", f"--vocab_file={root / 'vocab.txt'}",
          f"--output_dir={root / 'data'}", "--dupe_factor=5", *SHAPE)

    def pretrain(name, *extra):
        _bert("pretrain", f"--input_file={root / 'data' / 'train-*.tfrecord'}", f"--output_dir={root / name}",
              "--model=bert-tiny", f"--vocab_file={root / 'vocab.txt'}", "--do_train", "--do_eval",
              "--train_batch_size=16", "--max_eval_steps=2", *SHAPE, *extra)
        return str(root / name)

    first = pretrain("first", "--num_train_steps=100", "--num_warmup_steps=10", "--learning_rate=1e-3")
    second = pretrain("second", "--num_train_steps=300", "--num_warmup_steps=10", "--learning_rate=1e-3",
                      f"--init_checkpoint={first}")
    worse = pretrain("worse", "--num_train_steps=1", "--num_warmup_steps=0", "--learning_rate=1e-9")
    return {"root": root, "first": first, "second": second, "worse": worse, "task": str(root / "task")}


@pytest.fixture(params=["local", "gcs", "s3"])
def registry_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    return request.getfixturevalue(f"{request.param}_prefix") + "/registry"


def publish_flags(reg: str, model_dir: str, task: str, *extra) -> list[str]:
    return ["publish", f"--registry={reg}", "--model_name=tiny", f"--model_dir={model_dir}", f"--task_data_dir={task}",
            f"--gate_rule={RULE}", *SHAPE, *extra]


def test_three_runs_publish_continue_and_reject_then_rollback(runs, registry_uri, tmp_path):
    reg = registry.Registry(registry_uri)
    out = _bert(*publish_flags(registry_uri, runs["first"], runs["task"], "--run_id=run-1")).stdout
    assert "publish: tiny:1 PUBLISHED (nothing published yet" in out
    assert reg.published("tiny") == 1
    pinned = storage.read_json(storage.join(reg.model_dir("tiny"), registry.HELDOUT))
    assert pinned["records"] > 50 and pinned["made_by"] == "run-1"

    decision = tmp_path / "decision.md"
    out = _bert(*publish_flags(registry_uri, runs["second"], runs["task"], "--run_id=run-2", "--parent_version=1",
                               f"--decision_file={decision}")).stdout
    assert "publish: tiny:2 PUBLISHED (better than v1 by the rule)" in out, out
    assert reg.published("tiny") == 2
    m2 = reg.read_version_json("tiny", 2, registry.METRICS)
    # Side by side: v1 scored again on the same pinned set in this run; the candidate's loss is lower.
    assert m2["published_numbers"]["heldout.masked_lm_loss"] > m2["numbers"]["heldout.masked_lm_loss"]
    assert m2["gate"]["against_version"] == 1 and "| heldout.masked_lm_loss |" in decision.read_text()
    lineage = reg.read_version_json("tiny", 2, registry.LINEAGE)
    assert lineage["parent"]["version"] == 1 and lineage["run"]["id"] == "run-2"
    assert lineage["vocab"]["sha256"] == m2["vocab_sha256"]
    assert lineage["heldout"]["documents_sha256"] == pinned["documents_sha256"]
    assert lineage["stages"]["publish"]["model_dir"] == runs["second"]

    out = _bert(*publish_flags(registry_uri, runs["worse"], runs["task"], "--run_id=run-3")).stdout
    assert "publish: tiny:3 REJECTED: masked-LM loss not worse: heldout.masked_lm_loss" in out, out
    assert reg.published("tiny") == 2
    m3 = reg.read_version_json("tiny", 3, registry.METRICS)
    assert m3["gate"]["decision"] == "rejected" and m3["gate"]["reason"].startswith("masked-LM loss not worse")
    assert storage.is_complete(reg.version_dir("tiny", 3))

    assert reg.rollback("tiny")["version"] == 1
    assert reg.published("tiny") == 1


def test_a_changed_vocab_is_a_new_model_name_in_one_line(runs, tmp_path):
    reg_uri = str(tmp_path / "registry")
    _bert(*publish_flags(reg_uri, runs["first"], runs["task"]))
    other = tmp_path / "other-vocab-model"
    subprocess.run(["cp", "-r", runs["first"], str(other)], check=True)
    with open(other / "vocab.txt", "a") as f:
        f.write("zzzextra\n")
    line = one_line_error(run_bert(*publish_flags(reg_uri, str(other), runs["task"]), env=launcher_env()))
    assert "is not tiny:1's" in line and "a changed vocab is a new model: give another --model_name" in line
    assert registry.Registry(reg_uri).versions("tiny") == [1]


def test_bad_publish_inputs_are_one_line(runs, tmp_path):
    reg_uri = str(tmp_path / "registry")
    line = one_line_error(run_bert(*publish_flags(reg_uri, str(tmp_path), runs["task"])))
    assert f"--model_dir={tmp_path}: no complete checkpoint" in line
    line = one_line_error(run_bert("publish", f"--registry={reg_uri}", "--model_name=tiny",
                                   f"--model_dir={runs['first']}", "--gate_rule=accuracy goes up"))
    assert "gate rule: cannot read 'accuracy goes up'" in line
    line = one_line_error(run_bert("publish", f"--registry={reg_uri}", "--model_name=bad name",
                                   f"--model_dir={runs['first']}"))
    assert "model name 'bad name'" in line
    line = one_line_error(run_bert("publish", f"--registry={reg_uri}", "--model_name=tiny",
                                   f"--model_dir={runs['first']}"))
    assert "no held-out evaluation set yet, and no held-out documents were given" in line


def test_a_publisher_killed_mid_publish_leaves_the_previous_version_published(runs, tmp_path):
    reg_uri = str(tmp_path / "registry")
    reg = registry.Registry(reg_uri)
    _bert(*publish_flags(reg_uri, runs["first"], runs["task"]))
    proc = subprocess.Popen([sys.executable, "-m", "bert_core.cli",
                             *publish_flags(reg_uri, runs["second"], runs["task"])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=launcher_env(), cwd=ROOT)
    claim = os.path.join(reg.version_dir("tiny", 2), registry.CLAIM)
    deadline = time.monotonic() + 300
    while not os.path.exists(claim) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Whenever it died: the pointer is whole and names v1, or v2 if (and only if) v2 was complete.
    published = reg.published("tiny")
    assert published == 1 or (published == 2 and storage.is_complete(reg.version_dir("tiny", 2)))
    if published == 1:
        listing = subprocess.run([sys.executable, "-m", "pipelines.cli", "models", "ls", reg_uri, "tiny"],
                                 capture_output=True, text=True, cwd=ROOT, env=launcher_env())
        assert listing.returncode == 0 and listing.stdout.splitlines()[2].split()[:2] == ["1", "published"]
    # The next run goes on: it takes the next number and publishes through the gate.
    out = _bert(*publish_flags(reg_uri, runs["second"], runs["task"])).stdout
    assert reg.published("tiny") == max(reg.versions("tiny")), out


@pytest.mark.parametrize("store", ["local", "gcs", "s3"])
def test_two_publishers_finishing_together_exactly_one_wins_and_the_other_says_why(runs, store, tmp_path, request):
    """Both read the pointer (v1) when they start and swap it after scoring (tens of seconds later):
    the store lets exactly one swap through; the other keeps its version unpublished and says so."""
    reg_uri = str(tmp_path / "registry") if store == "local" else request.getfixturevalue(f"{store}_prefix") + "/registry"
    reg = registry.Registry(reg_uri)
    _bert(*publish_flags(reg_uri, runs["first"], runs["task"]))
    procs = [subprocess.Popen([sys.executable, "-m", "bert_core.cli",
                               *publish_flags(reg_uri, runs["second"], runs["task"], f"--run_id=racer-{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=launcher_env(), cwd=ROOT)
             for i in (1, 2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    lines = [next(l for l in out.splitlines() if l.startswith("publish: tiny:")) for out, _ in outs]
    won = [l for l in lines if " PUBLISHED (" in l]
    lost = [l for l in lines if " NOT PUBLISHED: " in l]
    assert len(won) == 1 and len(lost) == 1, lines
    winner = int(won[0].split("tiny:")[1].split()[0])
    assert reg.published("tiny") == winner
    assert f"lost the race to publish version {5 - winner}:" in lost[0] and f"it now names version {winner}" in lost[0]
    assert sorted(reg.versions("tiny")) == [1, 2, 3]
