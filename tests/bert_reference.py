"""Import Google's original BERT code (PyPI bert-tensorflow 1.0.4) for parity tests and benchmarks.

That code is TF1-era (`tf.gfile`, `tf.flags`, `tf.python_io`); it runs against `tensorflow.compat.v1`,
which we alias as `tensorflow` only while its modules are imported. It is never copied into the project.
"""

from __future__ import annotations

import importlib
import sys


def import_google(module: str):
    """`import_google("tokenization")` -> Google's `bert.tokenization`, bound to tf.compat.v1."""
    import tensorflow as tf2

    saved = sys.modules.get("tensorflow")
    sys.modules["tensorflow"] = tf2.compat.v1
    try:
        return importlib.import_module(f"bert.{module}")
    finally:
        sys.modules["tensorflow"] = saved
