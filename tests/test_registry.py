"""The model registry (bert_core.registry) and the gate (bert_core.gate), on a local directory, gs://
(fake-gcs-server, which enforces generation preconditions) and s3:// (moto, which enforces If-Match /
If-None-Match): versions are create-only, the pointer is a compare-and-swap (of two publishers exactly
one wins, the other is told why; the pointer is never torn), rollback follows the history, and every
bad input to `bert-pipeline models` is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from bert_core import gate, registry, storage
from bert_core.errors import UserError
from conftest import ROOT
from gcs_server import gcs, gcs_prefix  # noqa: F401
from s3_server import s3, s3_prefix  # noqa: F401


@pytest.fixture(params=["local", "gcs", "s3"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    return request.getfixturevalue(f"{request.param}_prefix") + "/registry"


def _model_files(tmp_path, tag: str) -> dict[str, str]:
    src = tmp_path / f"model-{tag}"
    (src / "ckpt-5").mkdir(parents=True, exist_ok=True)
    (src / "bert_config.json").write_text(json.dumps({"tag": tag}))
    (src / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\n")
    (src / "ckpt-5" / "model.ckpt-5.index").write_bytes(tag.encode() * 10)
    return {p: str(src / p) for p in ("bert_config.json", "vocab.txt", "ckpt-5/model.ckpt-5.index")}


def _add(reg, tmp_path, tag: str, decision: str = "published") -> int:
    return reg.add_version("m", _model_files(tmp_path, tag), {"numbers": {"heldout.masked_lm_loss": 1.0},
                                                              "gate": {"decision": decision, "reason": tag}},
                           {"run": {"id": tag}}, {"run_id": tag})


def models(*args, registry_uri: str | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pipelines.cli", "models", *args]
    if registry_uri and args[0] != "ls":
        argv += ["--registry", registry_uri]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def one_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("bert-pipeline: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --------------------------------------------------------------------------------------------------
# Versions and the pointer
# --------------------------------------------------------------------------------------------------
def test_versions_are_numbered_create_only_and_publish_and_rollback_follow_the_history(root, tmp_path):
    reg = registry.Registry(root)
    assert [_add(reg, tmp_path, t) for t in ("a", "b", "c")] == [1, 2, 3]
    vdir = reg.version_dir("m", 2)
    assert storage.is_complete(vdir)
    assert storage.read_json(storage.join(vdir, "bert_config.json")) == {"tag": "b"}
    assert storage.read_bytes(storage.join(vdir, "ckpt-5/model.ckpt-5.index")) == b"b" * 10
    marker = storage.read_json(storage.join(vdir, storage.COMPLETE_MARKER))
    assert [f["path"] for f in marker["files"]] == ["bert_config.json", "ckpt-5/model.ckpt-5.index",
                                                    "lineage.json", "metrics.json", "version.json", "vocab.txt"]
    # A version is never written twice: its claim is create-only.
    with pytest.raises(storage.AlreadyExists):
        storage.write_json(storage.join(vdir, registry.CLAIM), {}, exclusive=True)

    assert reg.published("m") is None
    reg.set_pointer("m", 1, "publish")
    reg.set_pointer("m", 3, "publish")
    record, _ = reg.read_pointer("m")
    assert (record["version"], record["serial"], record["history"]) == (3, 2, [1, 3])
    assert reg.rollback("m")["version"] == 1
    assert reg.published("m") == 1
    with pytest.raises(UserError, match="first published version; nothing to roll back"):
        reg.rollback("m")


def test_two_publishers_racing_exactly_one_wins_and_the_pointer_is_whole(root, tmp_path):
    reg = registry.Registry(root)
    for t in ("a", "b", "c"):
        _add(reg, tmp_path, t)
    reg.set_pointer("m", 1, "publish")
    for _round in range(3):
        _, token = reg.read_pointer("m")  # both decided against the same pointer
        results: dict[int, object] = {}
        barrier = threading.Barrier(2)

        def publish(version):
            barrier.wait()
            try:
                results[version] = reg.set_pointer("m", version, "publish", expect=token)
            except registry.LostRace as err:
                results[version] = err

        threads = [threading.Thread(target=publish, args=(v,)) for v in (2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [v for v, r in results.items() if isinstance(r, dict)]
        lost = [r for r in results.values() if isinstance(r, registry.LostRace)]
        assert len(won) == 1 and len(lost) == 1, results
        assert reg.published("m") == won[0]  # the pointer reads whole, with a valid checksum
        assert f"it now names version {won[0]}" in str(lost[0])
        reg.set_pointer("m", 1, "publish")


def test_versions_claimed_at_once_get_distinct_numbers(root, tmp_path):
    reg = registry.Registry(root)
    got: list[int] = []
    barrier = threading.Barrier(3)

    def add(tag):
        barrier.wait()
        got.append(_add(reg, tmp_path, tag))

    threads = [threading.Thread(target=add, args=(t,)) for t in ("x", "y", "z")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [1, 2, 3]
    tags = {storage.read_json(storage.join(reg.version_dir("m", v), "version.json"))["run_id"] for v in got}
    assert tags == {"x", "y", "z"}


def test_an_incomplete_version_is_never_published(root, tmp_path):
    reg = registry.Registry(root)
    _add(reg, tmp_path, "a")
    storage.write_json(storage.join(reg.version_dir("m", 2), registry.CLAIM), {"run_id": "killed"}, exclusive=True)
    with pytest.raises(UserError, match=r"m:2: incomplete"):
        reg.set_pointer("m", 2, "publish")
    assert _add(reg, tmp_path, "b") == 3  # the killed writer's number stays taken


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------
def test_models_cli_lists_shows_publishes_rolls_back_and_names_every_bad_input(root, tmp_path):
    reg = registry.Registry(root)
    for t, d in (("a", "published"), ("b", "rejected"), ("c", "published")):
        _add(reg, tmp_path, t, d)
    assert "nothing is published" in one_line(models("show", "m", registry_uri=root))
    out = models("publish", "m:1", registry_uri=root)
    assert out.returncode == 0 and "m: published version 1" in out.stdout, out.stderr
    assert models("publish", "m:3", registry_uri=root).returncode == 0
    listing = models("ls", root, "m").stdout.splitlines()
    assert [l.split()[:2] for l in listing[2:]] == [["1", "superseded"], ["2", "rejected"], ["3", "published"]]
    assert models("ls", root).stdout.splitlines()[2].split() == ["m", "3", "v3"]
    show = models("show", "m:2", registry_uri=root).stdout
    assert show.startswith("m:2  rejected") and '"id": "b"' in show and "ckpt-5/model.ckpt-5.index" in show
    out = models("rollback", "m", registry_uri=root)
    assert out.returncode == 0 and "rolled back from version 3 to version 1" in out.stdout
    # Bad inputs: one line each.
    assert "m:9: no such version" in one_line(models("show", "m:9", registry_uri=root))
    assert "m:x: expected NAME:VERSION" in one_line(models("publish", "m:x", registry_uri=root))
    assert "no model 'nope' (have: m)" in one_line(models("show", "nope", registry_uri=root))
    assert "expected NAME:VERSION" in one_line(models("publish", "m", registry_uri=root))
    not_one = storage.join(root, "..", "elsewhere") if not storage.is_remote(root) else root + "-other"
    storage.write_text(storage.join(not_one, "readme.txt"), "not a registry")
    assert "not a model registry" in one_line(models("ls", not_one))
    # A hand-edited pointer: one line, until `models publish` sets it again.
    pointer = reg.pointer_path("m")
    record = json.loads(storage.read_text(pointer))
    record["version"] = 2
    storage.write_text(pointer, json.dumps(record))
    assert "torn or hand-edited pointer: its checksum does not match" in one_line(models("show", "m", registry_uri=root))
    storage.write_text(pointer, '{"model": "m", "vers')  # torn
    assert "torn or hand-edited pointer: not valid JSON" in one_line(models("ls", root, "m"))
    assert "CORRUPT" in models("ls", root).stdout
    assert models("publish", "m:3", registry_uri=root).returncode == 0
    assert reg.published("m") == 3


# --------------------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------------------
RULE = "finetune accuracy up by >= 0.5 points and masked-LM loss not worse"


def test_the_gate_decides_with_exact_numbers_side_by_side():
    pub = {"finetune.accuracy": 0.80, "heldout.masked_lm_loss": 3.0}
    ok = gate.decide(RULE, {"finetune.accuracy": 0.806, "heldout.masked_lm_loss": 3.0}, pub, 4)
    assert ok.passed and ok.reason == "better than v4 by the rule"
    assert [(r["metric"], r["status"]) for r in ok.rows] == [("finetune.accuracy", "ok"),
                                                             ("heldout.masked_lm_loss", "ok")]
    assert ok.rows[0]["change"] == pytest.approx(0.006) and ok.rows[0]["needed"] == pytest.approx(0.005)
    low = gate.decide(RULE, {"finetune.accuracy": 0.804, "heldout.masked_lm_loss": 2.9}, pub, 4)
    assert not low.passed and low.reason.startswith("finetune accuracy up by >= 0.5 points: finetune.accuracy "
                                                    "0.8000 -> 0.8040 (change +0.0040")
    worse = gate.decide(RULE, {"finetune.accuracy": 0.9, "heldout.masked_lm_loss": 3.01}, pub, 4)
    assert not worse.passed and "heldout.masked_lm_loss 3.0000 -> 3.0100 (change -0.0100" in worse.reason
    slack = "finetune accuracy not worse by more than 2 points"
    assert gate.decide(slack, {"finetune.accuracy": 0.781}, pub, 4).passed
    assert not gate.decide(slack, {"finetune.accuracy": 0.779}, pub, 4).passed
    first = gate.decide(RULE, {"finetune.accuracy": 0.5, "heldout.masked_lm_loss": 9.0}, None)
    assert first.passed and "first version" in first.reason
    md = ok.markdown("m:5")
    assert "| finetune.accuracy | 0.8000 | 0.8060 | 0.0060 | 0.0050 | ok |" in md and "PUBLISHED m:5" in md
    skipped = gate.decide(RULE, {"finetune.accuracy": 0.9, "heldout.masked_lm_loss": 2.0}, pub, 4,
                          comparable={"finetune.": "the task data differ"})
    assert skipped.passed and "skipped (the task data differ)" in skipped.reason
    only = gate.decide("finetune accuracy not worse", {"finetune.accuracy": 0.9}, pub, 4,
                       comparable={"finetune.": "the task data differ"})
    assert not only.passed and only.reason.startswith("no clause could be compared")


@pytest.mark.parametrize("rule, message", [
    ("finetune accuracy better", "cannot read 'finetune accuracy better'"),
    ("masked-LM loss up by >= 0.1", "masked-LM loss is better lower; say down"),
    ("masked-LM loss down by >= 1 points", "points are for accuracies"),
    ("perplexity not worse", "unknown metric 'perplexity'"),
])
def test_a_bad_rule_is_one_line(rule, message):
    with pytest.raises(UserError, match=message):
        gate.parse_rule(rule)


def test_a_rule_naming_a_metric_the_candidate_lacks_lists_what_it_has():
    with pytest.raises(UserError, match=r"the candidate has no finetune.f1 \(have: finetune.accuracy\)"):
        gate.decide("finetune f1 not worse", {"finetune.accuracy": 0.9}, None)


# --------------------------------------------------------------------------------------------------
# Where a pipeline run starts (components.common.resolve_start_point)
# --------------------------------------------------------------------------------------------------
def test_a_run_continues_from_the_published_version_and_keeps_its_vocab(tmp_path):
    from components.common import resolve_start_point

    root = str(tmp_path / "registry")
    assert resolve_start_point(root, "m", "published", "", "")["parent_version"] == 0  # nothing there yet
    assert resolve_start_point("", "m", "published", "/w", "/v.txt") == {
        "init_checkpoint": "/w", "vocab_uri": "/v.txt", "parent_version": 0, "reason": "from scratch (init_checkpoint /w)"}
    reg = registry.Registry(root)
    _add(reg, tmp_path, "a")
    _add(reg, tmp_path, "b")
    reg.set_pointer("m", 2, "publish")
    start = resolve_start_point(root, "m", "published", "", "")
    vdir = reg.version_dir("m", 2)
    assert (start["init_checkpoint"], start["vocab_uri"], start["parent_version"]) == (
        vdir, os.path.join(vdir, "vocab.txt"), 2)
    scratch = resolve_start_point(root, "m", "scratch", "", "")  # fresh weights, the name's vocab
    assert (scratch["init_checkpoint"], scratch["vocab_uri"], scratch["parent_version"]) == (
        "", os.path.join(vdir, "vocab.txt"), 0)
    same = tmp_path / "same.txt"
    same.write_text("[PAD]\n[UNK]\nthe\n")
    assert resolve_start_point(root, "m", "published", "", str(same))["parent_version"] == 2
    other = tmp_path / "other.txt"
    other.write_text("[PAD]\n[UNK]\na\n")
    with pytest.raises(UserError, match=r"is not the vocab of m:2 .*: a changed vocab is a new model, give another "
                                        r"model_name"):
        resolve_start_point(root, "m", "published", "", str(other))
    with pytest.raises(UserError, match="init_checkpoint=/w and init_from=published"):
        resolve_start_point(root, "m", "published", "/w", "")
    with pytest.raises(UserError, match="init_from='latest': expected published or scratch"):
        resolve_start_point(root, "m", "latest", "", "")
