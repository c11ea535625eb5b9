"""Stages with their inputs and outputs on gs:// (a real fake-gcs-server on loopback): create-data
reads a corpus and vocab from gs:// and writes shards + data_manifest.json there; pretrain (a few
steps) reads those shards and writes checkpoints there. Each part skips, saying so, until its `bert`
subcommand exists; the flags are Google's (create_pretraining_data.py, run_pretraining.py)."""

from __future__ import annotations

import importlib.util
import io
import json

import pytest

from bert_core import storage
from bert_core.data import corpus
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


def test_pretrain_reads_shards_and_writes_checkpoints_on_gs(gcs_run, default_corpus, uncased_vocab, tmp_path):
    _command("pretrain")
    data = _create_data(gcs_run, default_corpus, uncased_vocab)
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps({
        "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
        "initializer_range": 0.02}))
    bert_config = gcs_run.upload(config, "inputs/bert_config.json")
    out = gcs_run.path("pretrain")
    run_bert("pretrain", f"--input_file={data}/*.tfrecord*", f"--bert_config_file={bert_config}",
             f"--output_dir={out}", "--max_seq_length=64", "--max_predictions_per_seq=10",
             "--train_batch_size=8", "--num_train_steps=3", "--num_warmup_steps=1",
             env=gcs_run.env, check=True, timeout=600)
    names = gcs_run.objects("pretrain")
    assert any(".index" in n for n in names) and any(".data-" in n for n in names), names
    assert not [n for n in names if n.endswith(".tmp")]
