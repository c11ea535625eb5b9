"""Stages with their inputs and outputs on gs:// (a real fake-gcs-server on loopback): create-data
reads a corpus and vocab from gs:// and writes shards + data_manifest.json there; pretrain (a few
steps of a tiny BERT) stages those shards to a node-local cache, publishes whole checkpoints, metrics,
eval results and summaries there, resumes from them on another "host" (a fresh local cache), and
survives a SIGKILL. Each part skips, saying so, until its `bert` subcommand exists; the flags are
Google's (create_pretraining_data.py, run_pretraining.py)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bert_core import storage
from bert_core.data import corpus
from bert_core.errors import UserError
from conftest import run_bert
from gcs_server import gcs, gcs_prefix, gcs_run  # noqa: F401  (fixtures)


def _command(name: str):
    from bert_core import cli

    command = next((c for c in cli.COMMANDS if c.name == name), None)
    if command is None or importlib.util.find_spec(command.target.split(":")[0]) is None:
        pytest.skip(f"`bert {name}` does not exist yet")
    return command


def _require_seekable_gs_corpus(gcs_run) -> None:
    """The corpus reader must read byte ranges of a gs:// file (see test_storage's corpus test)."""
    path = gcs_run.path("probe/corpus.txt")
    storage.write_text(path, "a b\n\nc d\n")
    try:
        docs = list(corpus.iter_documents(path))
    except io.UnsupportedOperation:
        pytest.xfail("corpus.iter_documents takes the size from os.fstat(f.fileno()), which a gs:// reader "
                     "has not (it needs storage.size(path)); create-data cannot read a gs:// corpus yet")
    assert docs == [["a b"], ["c d"]]


def _create_data(gcs_run, corpus_path, vocab):
    _command("create-data")
    _require_seekable_gs_corpus(gcs_run)
    inputs = gcs_run.upload(corpus_path, "inputs/corpus.txt")
    vocab_gs = gcs_run.upload(vocab, "inputs/vocab.txt")
    out = gcs_run.path("data")
    run_bert("create-data", f"--input_file={inputs}", f"--vocab_file={vocab_gs}", f"--output_dir={out}",
             "--max_seq_length=64", "--max_predictions_per_seq=10", "--dupe_factor=1", "--num_shards=2",
             env=gcs_run.env, check=True, timeout=300)
    return out


def test_create_data_reads_and_writes_gs(gcs_run, default_corpus, uncased_vocab):
    out = _create_data(gcs_run, default_corpus, uncased_vocab)
    names = gcs_run.objects("data")
    assert "data_manifest.json" in names, names
    shards = [n for n in names if n.endswith(".tfrecord") or ".tfrecord" in n]
    assert len(shards) == 2, names
    assert not [n for n in names if n.endswith(".tmp")]  # no temporaries under the prefix
    manifest = storage.read_json(storage.join(out, "data_manifest.json"))
    assert json.dumps(manifest)  # a JSON document; its fields are create-data's to check
    assert all(storage.size(storage.join(out, s)) > 0 for s in shards)


TINY = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
        "initializer_range": 0.02}


@pytest.fixture
def gs_data(gcs_run, default_corpus, uncased_vocab, tmp_path):
    """Shards made by create-data on gs://, and a tiny bert_config.json there (hidden 32, 1 layer)."""
    _command("pretrain")
    data = _create_data(gcs_run, default_corpus, uncased_vocab)
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps(TINY))
    return data, gcs_run.upload(config, "inputs/bert_config.json")


def _pretrain_args(gs_data, out, *extra):
    data, bert_config = gs_data
    return ["pretrain", f"--input_file={data}/*.tfrecord*", f"--bert_config_file={bert_config}",
            f"--output_dir={out}", "--max_seq_length=64", "--max_predictions_per_seq=10",
            "--train_batch_size=8", "--num_warmup_steps=1", "--log_every_steps=1", *extra]


def _env(gcs_run, cache) -> dict:
    """A node-local cache of its own: a run with a fresh one is a run on another host."""
    return {**gcs_run.env, "BERT_LOCAL_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def _pretrain(gcs_run, gs_data, out, cache, *extra):
    return run_bert(*_pretrain_args(gs_data, out, *extra), env=_env(gcs_run, cache), check=True, timeout=600)


def _assert_published(out: str, step: int) -> None:
    """ckpt-<step> on gs:// is whole: its marker lists exactly the objects under it, the weights under
    Google's names, the state and rank 0's input position are there, and the pointer names it."""
    from bert_core import run_dir

    ckpt = storage.join(out, f"ckpt-{step}")
    assert storage.is_complete(ckpt)
    listed = {f["path"]: f["size"] for f in storage.read_json(storage.join(ckpt, storage.COMPLETE_MARKER))["files"]}
    present = {i.path[len(ckpt) + 1:]: i.size for i in storage.list_files(ckpt + "/")}
    present.pop(storage.COMPLETE_MARKER)
    assert listed == present
    for name in (f"model.ckpt-{step}.index", "state.index", "data-rank0.index", run_dir.METADATA):
        assert name in listed, sorted(listed)
    assert run_dir.CheckpointDir(step, ckpt).metadata()["global_step"] == step
    assert f'model_checkpoint_path: "ckpt-{step}/model.ckpt-{step}"' in storage.read_text(storage.join(out, "checkpoint"))


#: TensorBoard as `pip install tensorboard boto3` has it, without TensorFlow: its own filesystem layer,
#: whose s3:// goes through boto3 (TensorFlow 2.18's has no s3://). Prints the loss summaries' steps.
TENSORBOARD_WITHOUT_TF = """
import sys
sys.modules["tensorflow"] = None  # `import tensorflow` fails: TensorBoard falls back to its stub
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
loss = EventMultiplexer().AddRunsFromDirectory(sys.argv[1]).Reload().Tensors(".", "loss")
assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None
print(*sorted({e.step for e in loss}))
"""


def test_pretrain_reads_shards_and_writes_checkpoints_on_gs(gcs_run, gs_data, tmp_path):
    import tensorflow as tf

    from bert_core import run_dir

    out = gcs_run.path("pretrain")
    first = _pretrain(gcs_run, gs_data, out, tmp_path / "host-a", "--do_train", "--do_eval",
                      "--num_train_steps=4", "--save_checkpoints_steps=2", "--keep_checkpoints=2",
                      "--max_eval_steps=2")
    # Inputs: this rank's shards were staged to the node-local cache, byte for byte, then read there.
    assert "staged 2 file(s)" in first.stdout, first.stdout
    data, _ = gs_data
    for shard in storage.glob(f"{data}/*.tfrecord*"):
        cached = list((tmp_path / "host-a").rglob(storage.basename(shard)))
        assert len(cached) == 1 and cached[0].read_bytes() == storage.read_bytes(shard)
    # Outputs: complete checkpoints (marker last), metrics, eval results, summaries, all on gs://.
    names = gcs_run.objects("pretrain")
    assert not [n for n in names if n.endswith(".tmp") or "/." in n or n.startswith(".")], names
    assert [s for s, _ in run_dir.list_checkpoints(out)] == [2, 4]
    _assert_published(out, 4)
    metrics = storage.read_json(storage.join(out, "pretrain_metrics.json"))
    assert metrics["global_step"] == 4 and metrics["eval"]["global_step"] == 4
    evals = storage.read_json(storage.join(out, "eval_results.json"))
    assert evals["global_step"] == 4 and 0.0 <= evals["masked_lm_accuracy"] <= 1.0
    assert "global_step = 4" in storage.read_text(storage.join(out, "eval_results.txt"))
    assert any(n.startswith("train/") and "tfevents" in n for n in names), names
    # Google's tools read the published weights (downloaded: TF's own filesystem can't reach the emulator).
    local = gcs_run.download("pretrain/ckpt-4", tmp_path / "ckpt-4")
    variables = dict(tf.train.list_variables(str(local / "model.ckpt-4")))
    assert variables["bert/embeddings/word_embeddings"] == [30522, 32]

    # A second run on another host (empty local cache) resumes from the gs:// checkpoint.
    second = _pretrain(gcs_run, gs_data, out, tmp_path / "host-b", "--do_train", "--num_train_steps=6",
                       "--save_checkpoints_steps=2", "--keep_checkpoints=2")
    assert f"resumed from {out}/ckpt-4 at step 4" in second.stdout, second.stdout
    assert "training: steps 4->6" in second.stdout
    assert storage.read_json(storage.join(out, "pretrain_metrics.json"))["global_step"] == 6
    assert [s for s, _ in run_dir.list_checkpoints(out)] == [4, 6]  # ckpt-2 pruned, keep 2
    assert not gcs_run.objects("pretrain/ckpt-2")
    _assert_published(out, 6)
    # The run's history beside its summaries: the first host's steps (fetched by the second) and its own.
    from bert_core import layout, report_data

    history = report_data.read_history(layout.train_history_path(out))
    assert [r["step"] for r in history] == [1, 2, 3, 4, 5, 6]
    # TensorBoard reads the summaries from the artifact path (downloaded here: see above), both hosts' steps.
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    events = gcs_run.download("pretrain/train", tmp_path / "train")
    loss = EventMultiplexer().AddRunsFromDirectory(str(events)).Reload().Tensors(".", "loss")
    assert sorted({e.step for e in loss}) == [1, 2, 3, 4, 5, 6]
    if out.startswith("s3://"):  # TensorBoard without TensorFlow reads s3:// itself (boto3; docs/pipeline.md)
        read = subprocess.run([sys.executable, "-c", TENSORBOARD_WITHOUT_TF, storage.join(out, "train")],
                              env={**os.environ, **gcs_run.env}, capture_output=True, text=True, timeout=300)
        assert read.returncode == 0 and read.stdout.split() == ["1", "2", "3", "4", "5", "6"], read.stderr[-2000:]

    # --do_eval alone evaluates the latest gs:// checkpoint (downloaded on a third host).
    third = _pretrain(gcs_run, gs_data, out, tmp_path / "host-c", "--do_eval", "--max_eval_steps=2")
    assert "global_step = 6" in third.stdout
    assert storage.read_json(storage.join(out, "eval_results.json"))["global_step"] == 6


def test_killed_pretrain_on_gs_leaves_the_last_complete_checkpoint_and_reruns(gcs_run, gs_data, tmp_path):
    from bert_core import run_dir

    out = gcs_run.path("pretrain")
    env = {**os.environ, **_env(gcs_run, tmp_path / "host-a")}
    cmd = [sys.executable, "-m", "bert_core.cli", *_pretrain_args(gs_data, out, "--do_train", "--num_train_steps=100000",
                                                                  "--save_checkpoints_steps=3", "--keep_checkpoints=3")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    try:
        deadline = time.monotonic() + 300
        saves = 0
        for line in proc.stdout:  # SIGKILL right after the second save: the run is mid-training
            seen.append(line)
            saves += line.startswith(f"saved {out}/ckpt-")
            if saves == 2 or time.monotonic() > deadline:
                break
        assert saves == 2, "".join(seen[-30:])
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()

    # A kill mid-publish leaves objects without a marker: make one for certain, newer than any real one.
    storage.write_bytes(storage.join(out, "ckpt-99999", "model.ckpt-99999.index"), b"partial")
    latest = run_dir.latest_checkpoint(out)
    assert latest is not None and latest[0] >= 6 and latest[0] % 3 == 0
    _assert_published(out, latest[0])
    pointer = storage.read_text(storage.join(out, "checkpoint"))
    assert f'"ckpt-{latest[0]}/' in pointer  # the pointer only ever names a complete checkpoint

    rerun = _pretrain(gcs_run, gs_data, out, tmp_path / "host-b", "--do_train",
                      f"--num_train_steps={latest[0] + 2}", "--save_checkpoints_steps=3", "--keep_checkpoints=3")
    assert f"resumed from {out}/ckpt-{latest[0]} at step {latest[0]}" in rerun.stdout, rerun.stdout
    assert f"removed {out}/ckpt-99999: an incomplete checkpoint" in rerun.stdout
    assert not gcs_run.objects("pretrain/ckpt-99999")
    assert storage.read_json(storage.join(out, "pretrain_metrics.json"))["global_step"] == latest[0] + 2
    _assert_published(out, latest[0] + 2)
    steps = [s for s, _ in run_dir.list_checkpoints(out)]
    assert steps[-1] == latest[0] + 2 and len(steps) <= 3
    # No prefix but complete checkpoints is left under the output.
    assert {n.split("/")[0] for n in gcs_run.objects("pretrain") if n.startswith("ckpt-")} == {f"ckpt-{s}" for s in steps}


@pytest.mark.slow
def test_two_ranks_publish_both_input_positions_and_resume_on_a_fresh_host(gcs_run, gs_data, tmp_path):
    """horovodrun -np 2 --gloo: rank 1 uploads its own data-rank1 files (it may share no disk with the
    chief), the marker lists them, and a rerun whose hosts have no local state gets them back."""
    from bert_core import run_dir

    horovodrun = shutil.which("horovodrun", path=os.path.dirname(sys.executable)) or shutil.which("horovodrun")
    if horovodrun is None or importlib.util.find_spec("horovod") is None:
        pytest.skip("horovodrun not installed")
    out = gcs_run.path("pretrain")

    def run(cache, steps):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "OMPI_", "PMI_", "PMIX_"))}
        env.update(_env(gcs_run, cache), OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1",
                   PATH=f"{os.path.dirname(sys.executable)}:{env.get('PATH', '')}")
        cmd = [horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-m", "bert_core.cli",
               *_pretrain_args(gs_data, out, "--do_train", f"--num_train_steps={steps}", "--save_checkpoints_steps=2")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    run(tmp_path / "host-a", 2)
    _assert_published(out, 2)
    listed = [f["path"] for f in storage.read_json(storage.join(out, "ckpt-2", storage.COMPLETE_MARKER))["files"]]
    assert "data-rank1.index" in listed, listed
    assert run_dir.CheckpointDir(2, storage.join(out, "ckpt-2")).metadata()["world_size"] == 2
    second = run(tmp_path / "host-b", 4)
    assert f"resumed from {out}/ckpt-2 at step 2" in second.stdout
    assert "no input position saved" not in second.stdout + second.stderr
    _assert_published(out, 4)


def test_staging_downloads_once_and_again_when_the_object_changes(gcs_run, tmp_path, monkeypatch):
    from bert_core import staging

    monkeypatch.setenv("BERT_LOCAL_CACHE", str(tmp_path / "cache"))
    src = gcs_run.path("data", "a.tfrecord")
    storage.write_bytes(src, b"one")
    local = tmp_path / "local.tfrecord"
    local.write_bytes(b"here")
    logs = []
    (staged, same) = staging.stage([src, str(local)], log=logs.append)
    assert same == str(local)  # a local input is read where it is
    assert staged.startswith(str(tmp_path / "cache")) and open(staged, "rb").read() == b"one"
    assert logs and "staged 1 file(s)" in logs[0]
    logs.clear()
    assert staging.stage([src], log=logs.append) == [staged] and not logs  # cached: same size and generation
    storage.write_bytes(src, b"two")  # a new generation of the same size
    assert staging.stage([src], log=logs.append) == [staged] and logs
    assert open(staged, "rb").read() == b"two"
    with pytest.raises(UserError, match=r"data/b\.tfrecord: no such object$"):
        staging.stage([gcs_run.path("data", "b.tfrecord")])


def _tiny_bert(seed: int):
    import numpy as np
    import tensorflow as tf

    from bert_core.config import BertConfig
    from bert_core.modeling import BertModel

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, type_vocab_size=2)
    tf.keras.utils.set_random_seed(seed)
    model = BertModel(config)
    model({"input_ids": np.ones((1, 4), np.int32)})
    return model


def test_init_checkpoint_on_gs_is_staged_and_loads(gcs_prefix, tmp_path, monkeypatch):
    """--init_checkpoint=gs://...: a Google-named checkpoint (by prefix, by file, by directory with a
    `checkpoint` state object) loads through a node-local staged copy; a missing one is one line."""
    import numpy as np

    from bert_core import checkpoints

    monkeypatch.setenv("BERT_LOCAL_CACHE", str(tmp_path / "cache"))
    source, target = _tiny_bert(1), _tiny_bert(2)
    local = checkpoints.save_google_checkpoint(source, str(tmp_path / "ckpt" / "model.ckpt-7"))
    for f in os.listdir(tmp_path / "ckpt"):
        storage.copy(str(tmp_path / "ckpt" / f), f"{gcs_prefix}/run/ckpt-7/{f}")
    storage.write_text(f"{gcs_prefix}/run/checkpoint", 'model_checkpoint_path: "ckpt-7/model.ckpt-7"\n')
    assert local.endswith("model.ckpt-7")

    names = sorted(source.checkpoint_variables())
    for spec in (f"{gcs_prefix}/run/ckpt-7/model.ckpt-7", f"{gcs_prefix}/run/ckpt-7/model.ckpt-7.index",
                 f"{gcs_prefix}/run"):
        target = _tiny_bert(2)
        report = checkpoints.load_google_checkpoint(target, spec)
        assert sorted(report.loaded) == names and not report.missing and not report.unexpected
        for name in names:
            np.testing.assert_array_equal(target.checkpoint_variables()[name].numpy(),
                                          source.checkpoint_variables()[name].numpy())
    assert str(tmp_path / "cache") in report.source  # read from the staged copy

    with pytest.raises(UserError, match=r"model.ckpt-8: no such checkpoint"):
        checkpoints.load_google_checkpoint(target, f"{gcs_prefix}/run/ckpt-7/model.ckpt-8")


def _as_hf_safetensors(model, path: str) -> None:
    """`model`'s weights as Hugging Face names and layouts (what BertModel.save_pretrained writes)."""
    import re

    import numpy as np
    from safetensors.numpy import save_file

    from bert_core.checkpoints import hf_to_google_name

    tensors = {}
    for google, var in model.checkpoint_variables().items():
        name = re.sub(r"/layer_(\d+)/", r"/layer/\1/", google).replace("/", ".")
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        transpose = name.endswith(".kernel")
        name = name.removesuffix(".kernel") + ".weight" if transpose or name.endswith("_embeddings") else name
        assert hf_to_google_name(name) == (google, transpose)
        value = var.numpy()
        tensors[name] = np.ascontiguousarray(value.T if transpose else value)
    save_file(tensors, path)


def test_load_init_checkpoint_tells_the_formats_apart_on_gs(gcs_prefix, tmp_path, monkeypatch):
    """--init_checkpoint=gs://...: a directory with model.safetensors (or only its shards' index) is
    Hugging Face's, anything else Google's; both load through the staged copy."""
    import numpy as np

    from bert_core import checkpoints

    monkeypatch.setenv("BERT_LOCAL_CACHE", str(tmp_path / "cache"))
    source = _tiny_bert(1)
    names = sorted(source.checkpoint_variables())
    _as_hf_safetensors(source, str(tmp_path / "model.safetensors"))
    storage.copy(str(tmp_path / "model.safetensors"), f"{gcs_prefix}/hf/model.safetensors")
    storage.copy(str(tmp_path / "model.safetensors"), f"{gcs_prefix}/sharded/model-00001-of-00001.safetensors")
    storage.write_json(f"{gcs_prefix}/sharded/model.safetensors.index.json",
                       {"metadata": {}, "weight_map": {"bert.pooler.dense.bias": "model-00001-of-00001.safetensors"}})
    checkpoints.save_google_checkpoint(source, str(tmp_path / "ckpt" / "model.ckpt-3"))
    for f in os.listdir(tmp_path / "ckpt"):
        storage.copy(str(tmp_path / "ckpt" / f), f"{gcs_prefix}/google/{f}")

    for spec in (f"{gcs_prefix}/hf", f"{gcs_prefix}/hf/model.safetensors", f"{gcs_prefix}/sharded",
                 f"{gcs_prefix}/google/model.ckpt-3"):
        assert checkpoints.is_hf_safetensors(spec) == ("/google/" not in spec)
        target = _tiny_bert(2)
        line = checkpoints.load_init_checkpoint(target, spec)
        assert f"loaded {len(names)} variables, 0 missing, 0 unexpected" in line, (spec, line)
        for name in names:
            np.testing.assert_array_equal(target.checkpoint_variables()[name].numpy(),
                                          source.checkpoint_variables()[name].numpy(), err_msg=f"{spec}: {name}")
