"""`bert smoke-test` on this machine (no GPU): the build and device lines, the one `no GPU` line and a
small model trained on the CPU; under `horovodrun -np 2` each rank's result and the ranks' agreement,
which a rank with skewed weights (the test hook BERT_SMOKE_TEST_SKEW_RANK) makes fail."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

tf = pytest.importorskip("tensorflow")

from bert_core import smoke_test  # noqa: E402
from tests.conftest import one_line_error, run_bert  # noqa: E402
from tests.tiny_bert import BIN, ROOT, launcher_env  # noqa: E402

HOROVODRUN = shutil.which("horovodrun", path=str(BIN)) or shutil.which("horovodrun")
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "2"}
RESULT = re.compile(r"^result: (rank \d )?CPU:0 bert-tiny seq 32 batch 4 fp32: (?P<sps>[\d.]+) sequences/s, "
                    r"peak RSS (?P<rss>[\d.]+) GiB, 4 steps, loss (?P<loss>[\d.]+)$", re.M)
SMALL = ["--max_seq_length=32", "--train_batch_size=4", "--num_train_steps=4"]


def test_without_a_gpu_it_says_so_and_trains_a_small_model_on_the_cpu():
    assert not tf.config.list_physical_devices("GPU"), "this test is for a machine without a GPU"
    proc = run_bert("smoke-test", *SMALL, env=QUIET)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    build = tf.sysconfig.get_build_info()
    kind = "ROCm build" if build.get("is_rocm_build") else "CUDA build" if build.get("is_cuda_build") else "CPU-only"
    assert lines[0].startswith(f"build: TensorFlow {tf.__version__}, {kind}")
    assert lines[1] == f"device: CPU:0 ({__import__('os').cpu_count()} cores)"
    assert lines[2].startswith("no GPU: ") and lines[2].endswith("; training bert-tiny on the CPU")
    (result,) = RESULT.finditer(proc.stdout)
    # A fresh model's masked-LM + next-sentence loss starts near ln(30522) + ln(2) = 11.0.
    assert float(result["sps"]) > 0 and 0 < float(result["rss"]) < 64
    assert abs(float(result["loss"]) - 11.0) < 0.5
    assert "ranks agree" not in proc.stdout  # one process: nothing to compare


def test_the_defaults_are_the_rocm_forks_script():
    """scripts/run_model_in_rocm_docker.sh: MODEL=bert_large, SEQ=128, BATCH=8,
    --auto_mixed_precision=True, max predictions ceil(SEQ x 0.15), LEARNING_RATE=2e-5."""
    from bert_core.config import SmokeTestConfig

    cfg = SmokeTestConfig()
    assert (cfg.max_seq_length, cfg.train_batch_size, cfg.learning_rate) == (128, 8, 2e-5)
    assert cfg.model is None and cfg.dtype is None  # bert-large and fp16 on a GPU, bert-tiny fp32 on the CPU
    assert "bert-large on a GPU" in SmokeTestConfig.model_fields["model"].description


def test_bad_flags_are_one_line():
    line = one_line_error(run_bert("smoke-test", "--model=bert-huge"))
    assert line.startswith("bert: error: --model: unknown model, expected one of bert-tiny,")
    line = one_line_error(run_bert("smoke-test", "--max_seq_length=16", "--max_predictions_per_seq=16"))
    assert line == ("bert: error: --max_predictions_per_seq=16 must be below --max_seq_length=16")
    line = one_line_error(run_bert("smoke-test", "--model=bert-tiny", "--max_seq_length=1024", env=QUIET))
    assert line == "bert: error: --max_seq_length=1024 exceeds bert-tiny's max_position_embeddings=512"


def _horovodrun(*extra_env: tuple[str, str]):
    env = launcher_env()
    env.update(dict(extra_env))
    cmd = [HOROVODRUN, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-m", "bert_core.cli",
           "smoke-test", *SMALL, "--model=bert-tiny"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


@pytest.mark.skipif(HOROVODRUN is None, reason="horovodrun not installed")
def test_two_ranks_agree():
    pytest.importorskip("horovod.tensorflow")
    proc = _horovodrun()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    ranks = sorted(m[1] for m in RESULT.finditer(re.sub(r"^\[\d\]<stdout>:", "", out, flags=re.M)))
    assert ranks == ["rank 0 ", "rank 1 "], out
    agree = re.search(r"ranks agree: yes \(2 ranks: loss [\d.]+ and weights checksum [\d.e+]+ on every rank\)", out)
    assert agree, out


@pytest.mark.skipif(HOROVODRUN is None, reason="horovodrun not installed")
def test_a_rank_with_other_weights_fails_the_check():
    pytest.importorskip("horovod.tensorflow")
    proc = _horovodrun((smoke_test.SKEW_RANK_ENV, "1"))
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert re.search(r"ranks agree: NO \(rank 0: loss [\d.]+ checksum [\d.e+]+; rank 1: loss [\d.]+ checksum "
                     r"[\d.e+]+: more than 1e-06 relative apart\)", proc.stdout), proc.stdout[-3000:]
