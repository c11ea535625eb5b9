"""`bert finetune` under Horovod: 2 ranks x batch 4 (horovodrun --gloo) end with the same weights as one
process x batch 8 (1e-5), identical on both ranks; each rank trains on its own slice of every global
batch, and eval/predict outputs are gathered so the chief writes whole files."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.test_finetune import squad_file, write_model_files, write_sentiment_tsv
from tests.tiny_bert import BIN, run_ok

HOROVODRUN = shutil.which("horovodrun", path=str(BIN)) or shutil.which("horovodrun")

pytest.importorskip("horovod.tensorflow")

# Runs run_finetune with the config in argv[1] and saves this rank's weights as final_rank<r>.npz.
SCRIPT = """
import json, os, sys
import numpy as np
from bert_core.config import FinetuneConfig
from bert_core.finetune import run_finetune
from bert_core import distributed
cfg = FinetuneConfig(**json.loads(sys.argv[1]))
run = run_finetune(cfg)
r = distributed.current().rank
np.savez(os.path.join(cfg.output_dir, f"final_rank{r}.npz"),
         **{k: v.numpy() for k, v in run.model.checkpoint_variables().items()})
"""


def _finetune(out: pathlib.Path, ranks: int, batch: int, **cfg) -> subprocess.CompletedProcess:
    cfg = {**cfg, "output_dir": str(out), "train_batch_size": batch}
    cmd = [sys.executable, "-c", SCRIPT, json.dumps(cfg)]
    if ranks > 1:
        cmd = [HOROVODRUN, "-np", str(ranks), "-H", f"localhost:{ranks}", "--gloo", *cmd]
    return run_ok(cmd, timeout=300)


def _max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def _load(path) -> dict:
    return dict(np.load(path))


@pytest.mark.skipif(HOROVODRUN is None, reason="horovodrun not installed")
def test_two_ranks_equal_one_process_with_the_double_batch(tmp_path):
    vocab, config = write_model_files(tmp_path / "model")
    data = write_sentiment_tsv(tmp_path / "data", sizes=(("train", 64), ("dev", 10), ("test", 7)))
    cfg = dict(task_name="tsv", text_a_column="sentence", label_column="label", data_dir=str(data), vocab_file=vocab,
               bert_config_file=config, max_seq_length=16, learning_rate=2e-3, num_train_epochs=1, seed=3,
               do_train=True, do_eval=True, do_predict=True, save_checkpoints_steps=4, log_every_steps=4)
    one = tmp_path / "one"
    _finetune(one, 1, 8, **cfg)
    two = tmp_path / "two"
    proc = _finetune(two, 2, 4, **cfg)

    r0, r1, ref = _load(two / "final_rank0.npz"), _load(two / "final_rank1.npz"), _load(one / "final_rank0.npz")
    assert _max_diff(r0, r1) == 0.0  # both ranks hold identical weights
    assert _max_diff(r0, ref) <= 1e-5  # and they are the one-process weights
    assert "2 rank(s), 8 sequences per update (4 x 1 micro-batches x 2 ranks)" in proc.stdout
    assert "8 updates of 8 examples" in proc.stdout and proc.stdout.count("step 8/8") == 1

    # Eval and predict cover every example once, whichever rank computed it.
    e1, e2 = (json.loads((d / "eval_results.json").read_text()) for d in (one, two))
    assert e2["num_examples"] == 10 and e2["global_step"] == 8
    assert e2["accuracy"] == e1["accuracy"] and e2["eval_loss"] == pytest.approx(e1["eval_loss"], abs=1e-5)
    p1 = np.loadtxt(one / "test_results.tsv")
    p2 = np.loadtxt(two / "test_results.tsv")
    assert p2.shape == (7, 2) and np.allclose(p1, p2, atol=1e-5)
    assert json.loads((two / "finetune_metrics.json").read_text())["world_size"] == 2


@pytest.mark.skipif(HOROVODRUN is None, reason="horovodrun not installed")
def test_squad_under_two_ranks_writes_every_question(tmp_path):
    vocab, config = write_model_files(tmp_path / "model")
    train = squad_file(tmp_path / "train.json", version_2=True, n=6)
    out = tmp_path / "two"
    _finetune(out, 2, 4, task_name="squad", train_file=train, predict_file=train, vocab_file=vocab,
              bert_config_file=config, max_seq_length=24, doc_stride=6, max_query_length=6, num_train_epochs=1,
              do_train=True, do_predict=True, version_2_with_negative=True)
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 12 and len(json.loads((out / "null_odds.json").read_text())) == 12
