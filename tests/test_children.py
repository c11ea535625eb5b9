"""bert_core.children: a child ends with its owner, even when the owner is SIGKILLed (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bert_core.children import alive
from conftest import ROOT
from processes import descendants, still_running

PY = [sys.executable, "-c"]


def _wait_for_children(proc: subprocess.Popen, n: int) -> dict[int, str]:
    deadline = time.time() + 60
    while len(found := descendants(proc.pid)) < n and time.time() < deadline:
        time.sleep(0.05)
    return found


def test_a_child_started_dying_with_this_process_ends_with_it():
    parent = subprocess.Popen(PY + ["import subprocess; from bert_core.children import dying_with_this_process; "
                                    "subprocess.run(dying_with_this_process(['sleep', '60']))"], cwd=ROOT)
    children = _wait_for_children(parent, 1)
    time.sleep(0.5)  # the wrapper has exec'd sleep
    assert any(c.startswith("sleep") for c in descendants(parent.pid).values())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert children and still_running(children, seconds=2) == {}


def test_exit_with_ends_a_process_whose_owner_is_not_its_parent():
    owner = subprocess.Popen(["sleep", "60"])
    try:
        follower = subprocess.Popen(PY + ["import sys, time; from bert_core.children import exit_with; "
                                          "exit_with(int(sys.argv[1])); time.sleep(60)", str(owner.pid)], cwd=ROOT)
        time.sleep(1)
        assert follower.poll() is None  # lives while its owner does
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
    assert follower.wait(timeout=5) == -signal.SIGKILL
    assert not alive(follower.pid)
