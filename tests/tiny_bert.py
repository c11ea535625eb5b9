"""Shared test helpers: a tiny BERT config, and running a command the way a Horovod launcher would."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent


def tiny_config(vocab_size: int = 64, **over) -> dict:
    """A 2-layer, 32-wide BERT config (bert_config.json fields), dropout off; keyword overrides."""
    cfg = {"vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 64, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
           "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 64, "type_vocab_size": 2,
           "initializer_range": 0.02}
    cfg.update(over)
    return cfg


def launcher_env() -> dict:
    """This environment without any launcher's variables (a test starts its own), one thread per
    process (two ranks share two cores), the repo importable and the venv's tools on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "OMPI_", "PMI_", "PMIX_"))}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), "PATH": f"{BIN}:{env.get('PATH', '')}",
                "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"})
    return env


def run_ok(cmd, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run cmd from the repo root in launcher_env(); assert it succeeded, showing its output if not."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=launcher_env(), timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc
