"""A run's lease on its output (bert_core.lease): a second run is refused with one line naming the
holder; a killed run's lease is taken over (dead pid on this host, or an expired heartbeat); of runs
racing for a stale lease exactly one wins; the lease goes with the run, also after a UserError. On
local paths, gs:// (tests/gcs_server.py) and s3:// (tests/s3_server.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from bert_core import lease, storage
from bert_core.errors import UserError
from conftest import ROOT, one_line_error, run_bert
from gcs_server import gcs, gcs_prefix  # noqa: F401
from s3_server import s3, s3_prefix  # noqa: F401

# Holds the lease on argv[1] as `bert <argv[2]>` until a line arrives on stdin.
HOLDER = """
import sys
from bert_core import lease
from bert_core.errors import UserError
try:
    with lease.hold(sys.argv[1], sys.argv[2]):
        print("held", flush=True)
        sys.stdin.readline()
except UserError as err:
    print(f"error: {err}", flush=True)
    sys.exit(2)
print("released", flush=True)
"""


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _holder(output: str, command: str = "pretrain", **env) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, output, command], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env))
    assert proc.stdout.readline() == "held\n", proc.stderr.read()
    return proc


def _release(proc: subprocess.Popen) -> str:
    out, err = proc.communicate("\n", timeout=60)
    assert proc.returncode == 0, err
    return out


@pytest.fixture(params=["local", "gcs", "s3"])
def output(request, tmp_path) -> str:
    """An output directory on each store."""
    if request.param == "local":
        return str(tmp_path / "out")
    return request.getfixturevalue(f"{request.param}_prefix") + "/out"


def _plant(output: str, heartbeat_age: float, timeout: float, pid: int = 4242, host: str = "elsewhere") -> None:
    """A lease record of another run, as it would have left it."""
    storage.makedirs(output)
    record = {"command": "bert pretrain", "argv": ["bert", "pretrain"], "host": host,
              "pid_namespace": lease._machine()[1], "pid": pid, "started": "2026-12-06 09:00:00 UTC",
              "timeout": timeout, "token": "planted", "beat": 7, "heartbeat": time.time() - heartbeat_age}
    storage.write_bytes(lease.lease_path(output), json.dumps(record).encode())


# --------------------------------------------------------------------------------------------------
# Two runs: the second one is refused, in one line naming the first
# --------------------------------------------------------------------------------------------------
def test_a_second_run_is_refused_with_the_holder_and_runs_once_the_first_ends(tmp_path, uncased_vocab):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The cat sat on the mat.\nIt was warm.\n\nA dog barked at night.\nThen it slept.\n")
    out = tmp_path / "data"
    args = ("create-data", f"--input_file={corpus}", f"--vocab_file={uncased_vocab}", f"--output_dir={out}",
            "--max_seq_length=32", "--max_predictions_per_seq=5")
    holder = _holder(str(out))
    try:
        line = one_line_error(run_bert(*args))
        assert f"{out}: in use by bert pretrain (pid {holder.pid} on " in line, line
        assert "BERT_LEASE_TIMEOUT" in line
        assert not (out / "data_manifest.json").exists()
    finally:
        assert _release(holder) == "released\n"
    assert not (out / lease.LEASE_NAME).exists()
    run_bert(*args, check=True)
    assert (out / "data_manifest.json").exists() and not (out / lease.LEASE_NAME).exists()


def test_every_rank_learns_of_a_refusal_under_mpirun(tmp_path, uncased_vocab):
    if shutil.which("mpirun") is None:
        pytest.skip("no mpirun")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The cat sat on the mat.\n\nA dog barked at night.\n")
    out = tmp_path / "data"
    holder = _holder(str(out))
    try:
        proc = subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", sys.executable, "-m",
                               "bert_core.cli", "create-data", f"--input_file={corpus}",
                               f"--vocab_file={uncased_vocab}", f"--output_dir={out}", "--num_shards=2"],
                              capture_output=True, text=True, env=_env(), timeout=120)
    finally:
        _release(holder)
    assert proc.returncode != 0
    assert proc.stderr.count(f"in use by bert pretrain (pid {holder.pid} ") == 2, proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------------
# Stale leases: taken over
# --------------------------------------------------------------------------------------------------
def test_a_killed_runs_lease_is_taken_over_at_once_on_its_host(tmp_path, capfd):
    out = str(tmp_path / "out")
    holder = _holder(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert os.path.exists(lease.lease_path(out))  # a killed run cannot clean up
    with lease.hold(out, "finetune"):  # the default 300 s timeout: only the dead pid makes it stale
        assert json.loads(open(lease.lease_path(out)).read())["command"] == "bert finetune"
    assert f"taking over the lease of bert pretrain (pid {holder.pid} " in capfd.readouterr().err
    assert not os.path.exists(lease.lease_path(out))


def test_a_lease_without_heartbeat_is_taken_over_and_a_live_one_is_not(output, capfd):
    _plant(output, heartbeat_age=1, timeout=300)
    with pytest.raises(lease.LeaseHeld, match=r"in use by bert pretrain \(pid 4242 on elsewhere, started "):
        with lease.hold(output, "finetune"):
            pass
    _plant(output, heartbeat_age=10, timeout=2)
    with lease.hold(output, "finetune"):
        record = json.loads(storage.read_bytes(lease.lease_path(output)))
        assert (record["command"], record["pid"]) == ("bert finetune", os.getpid())
    err = capfd.readouterr().err
    assert "taking over the lease of bert pretrain (pid 4242 on elsewhere" in err and "no heartbeat for over 2 s" in err
    assert not storage.exists(lease.lease_path(output))


def test_a_live_lease_is_kept_alive_by_its_heartbeat(output, monkeypatch):
    monkeypatch.setenv("BERT_LEASE_TIMEOUT", "1")  # a beat every 0.1 s
    with lease.hold(output, "pretrain"):
        time.sleep(2)  # twice the timeout: only heartbeats keep it
        with pytest.raises(lease.LeaseHeld):
            with lease.hold(output, "finetune"):
                pass
        assert json.loads(storage.read_bytes(lease.lease_path(output)))["beat"] > 5


# --------------------------------------------------------------------------------------------------
# Races for a stale lease: exactly one winner
# --------------------------------------------------------------------------------------------------
def test_runs_racing_for_a_stale_lease_exactly_one_wins(output, monkeypatch):
    _plant(output, heartbeat_age=60, timeout=2)
    read_version = storage.read_version

    def slow_read(path):  # every racer reads the stale record before any of them writes
        found = read_version(path)
        time.sleep(0.3)
        return found

    monkeypatch.setattr(storage, "read_version", slow_read)
    n = 6
    start, results, done = threading.Barrier(n), [], threading.Condition()

    def run():
        start.wait()
        try:
            with lease.hold(output, "pretrain"):
                with done:
                    results.append("won")
                    done.notify_all()
                    done.wait_for(lambda: len(results) == n, timeout=60)  # hold it until all others tried
        except lease.LeaseHeld as err:
            assert "in use by bert pretrain" in str(err)
            with done:
                results.append("refused")
                done.notify_all()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == ["refused"] * (n - 1) + ["won"]
    assert not storage.exists(lease.lease_path(output))


RACER = """
import sys, time
from bert_core import lease
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    with lease.hold(sys.argv[1], "pretrain"):
        print("won", flush=True)
        time.sleep(3)
except lease.LeaseHeld:
    print("refused", flush=True)
"""


def test_processes_racing_for_a_stale_local_lease_exactly_one_wins(tmp_path):
    out = str(tmp_path / "out")
    _plant(out, heartbeat_age=60, timeout=2)
    gate = str(time.time() + 3)
    racers = [subprocess.Popen([sys.executable, "-c", RACER, out, gate], stdout=subprocess.PIPE, text=True,
                               env=_env()) for _ in range(4)]
    said = sorted(p.communicate(timeout=120)[0].strip() for p in racers)
    assert said == ["refused"] * 3 + ["won"]
    assert not os.path.exists(lease.lease_path(out))


# --------------------------------------------------------------------------------------------------
# The lease goes with the run
# --------------------------------------------------------------------------------------------------
def test_the_lease_is_released_after_a_user_error(output):
    with pytest.raises(UserError, match="bad input"):
        with lease.hold(output, "pretrain"):
            assert storage.exists(lease.lease_path(output))
            raise UserError("bad input")
    assert not storage.exists(lease.lease_path(output))
    with lease.hold(output, "pretrain"):  # and the next run takes it
        pass


def test_a_failed_command_leaves_neither_lease_nor_directory(tmp_path):
    out = tmp_path / "model"
    one_line_error(run_bert("pretrain", f"--input_file={tmp_path}/none-*.tfrecord", f"--output_dir={out}",
                            "--do_train", "--num_train_steps=1"))
    assert not out.exists()


LOSER = """
import sys, time
from bert_core import lease
from bert_core.errors import UserError
try:
    with lease.hold(sys.argv[1], "pretrain"):
        print("held", flush=True)
        while True:
            time.sleep(0.05)
except UserError as err:
    print(f"{type(err).__name__}: {err}", flush=True)
    sys.exit(2)
"""


def test_a_run_whose_lease_was_taken_over_stops(tmp_path):
    out = str(tmp_path / "out")
    proc = subprocess.Popen([sys.executable, "-c", LOSER, out], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(BERT_LEASE_TIMEOUT="1"))
    assert proc.stdout.readline() == "held\n"
    _plant(out, heartbeat_age=0, timeout=300)  # another run took it (this one looked stale to it)
    said, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "LeaseLost: " in said and "taken over by bert pretrain (pid 4242 on elsewhere" in said, said
    assert json.loads(open(lease.lease_path(out)).read())["token"] == "planted"  # the new holder's, kept


def test_the_staleness_timeout_is_checked(monkeypatch):
    monkeypatch.setenv("BERT_LEASE_TIMEOUT", "soon")
    with pytest.raises(UserError, match="BERT_LEASE_TIMEOUT=soon: expected a number of seconds above 0"):
        lease.timeout()


# Each rank writes what it was told to rank<N>.txt (and exits 0, so horovodrun lets every rank finish).
RANK = """
import os, sys
from bert_core import lease
rank = os.environ["HOROVOD_RANK"]
try:
    with lease.hold(sys.argv[1], "pretrain", ranks="horovod"):
        said = "held"
except lease.LeaseHeld as err:
    said = str(err)
open(os.path.join(sys.argv[2], f"rank{rank}.txt"), "w").write(said)
"""


@pytest.mark.slow
def test_every_rank_learns_of_a_refusal_under_horovodrun(tmp_path):
    from tests.tiny_bert import BIN, launcher_env

    horovodrun = shutil.which("horovodrun", path=str(BIN)) or shutil.which("horovodrun")
    if horovodrun is None:
        pytest.skip("horovodrun not installed")
    out = tmp_path / "model"
    holder = _holder(str(out), "finetune")
    try:
        proc = subprocess.run([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-c", RANK,
                               str(out), str(tmp_path)],
                              capture_output=True, text=True, env=launcher_env(), cwd=ROOT, timeout=300)
    finally:
        _release(holder)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for rank in (0, 1):
        said = (tmp_path / f"rank{rank}.txt").read_text()
        assert f"in use by bert finetune (pid {holder.pid} " in said, said
    proc = subprocess.run([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-c", RANK,
                           str(out), str(tmp_path)], capture_output=True, text=True, env=launcher_env(), cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["held", "held"]
