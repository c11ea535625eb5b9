"""GPU pinning: each rank sees exactly its local rank's GPU, with memory growth, chosen before the first
op (Horovod's TensorFlow guide, step 2), and says which device it uses."""

from __future__ import annotations

import shutil
import sys

import pytest
import tensorflow as tf

from bert_core import distributed
from bert_core.distributed import gpu_index, pin_gpu
from bert_core.errors import UserError
from tests.tiny_bert import BIN, run_ok


@pytest.mark.parametrize("visible, local_rank, local_size, expected", [
    (0, 0, 1, None),   # CPU only
    (0, 3, 8, None),
    (1, 0, 1, 0),      # one process, one GPU
    (8, 0, 1, 0),      # one process on an 8-GPU node takes the first
    (8, 0, 8, 0),
    (8, 3, 8, 3),      # slotsPerWorker = GPUs: rank i gets GPU i
    (8, 7, 8, 7),
    (8, 1, 2, 1),      # fewer ranks than GPUs
    (1, 5, 8, 0),      # the launcher already narrowed each rank to one GPU
])
def test_gpu_index(visible, local_rank, local_size, expected):
    assert gpu_index(visible, local_rank, local_size) == expected


def test_more_ranks_than_gpus_is_one_line():
    with pytest.raises(UserError, match="8 ranks on this node but 4 GPUs are visible") as err:
        gpu_index(4, 5, 8)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="outside"):
        gpu_index(8, 8, 8)


class FakeConfig:
    """Records what pin_gpu asks of tf.config, with `n` fake physical GPUs."""

    def __init__(self, n: int):
        self.gpus = [tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU")
                     for i in range(n)]
        self.visible, self.growth = None, []

    def install(self, monkeypatch):
        monkeypatch.setattr(tf.config, "list_physical_devices",
                            lambda kind=None: list(self.gpus) if kind == "GPU" else [])
        monkeypatch.setattr(tf.config, "set_visible_devices",
                            lambda devices, kind=None: setattr(self, "visible", (devices, kind)))
        monkeypatch.setattr(tf.config.experimental, "set_memory_growth",
                            lambda device, on: self.growth.append((device, on)))


def test_pin_gpu_shows_one_gpu_with_memory_growth_and_logs_it(monkeypatch, capsys):
    fake = FakeConfig(8)
    fake.install(monkeypatch)
    assert pin_gpu(rank=11, local_rank=3, local_size=8) == "/physical_device:GPU:3"
    assert fake.visible == (fake.gpus[3], "GPU")
    assert fake.growth == [(fake.gpus[3], True)]
    assert "rank 11 (local rank 3 of 8) uses /physical_device:GPU:3 (8 GPU(s) visible)" in capsys.readouterr().err


def test_initialize_pins_before_returning(monkeypatch):
    fake = FakeConfig(2)
    fake.install(monkeypatch)
    monkeypatch.setattr(distributed, "_CURRENT", None)
    dist = distributed.initialize("single")
    assert fake.visible == (fake.gpus[0], "GPU")
    monkeypatch.setattr(distributed, "_CURRENT", None)
    assert dist.local_rank == 0


@pytest.mark.skipif(not (shutil.which("horovodrun", path=str(BIN)) or shutil.which("horovodrun")),
                    reason="horovodrun not installed")
def test_each_horovod_rank_logs_its_device():
    horovodrun = shutil.which("horovodrun", path=str(BIN)) or shutil.which("horovodrun")
    code = "from bert_core import distributed; distributed.initialize()"
    proc = run_ok([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-c", code])
    output = proc.stdout + proc.stderr
    for rank in (0, 1):
        assert f"rank {rank} (local rank {rank} of 2) uses CPU (0 GPU(s) visible)" in output
