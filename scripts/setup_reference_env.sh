#!/usr/bin/env bash
# Create the reference environment in which Google's original BERT code runs, for parity tests.
#   scripts/setup_reference_env.sh [ENV_DIR]        (default: .cache/ref-tf215)
#
# Google's modeling.py (PyPI bert-tensorflow 1.0.4) calls tf.compat.v1.layers.dense, which Keras 3
# (TensorFlow >= 2.16) refuses. TensorFlow 2.15.1 still ships Keras 2 and runs it, so the parity tests
# build Google's model in this separate, small venv (a subprocess) and exchange checkpoints and .npz
# files with ours. Idempotent: an existing, working env is left alone; a half-built one is repaired.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV_DIR=${1:-.cache/ref-tf215}
PYTHON=${PYTHON:-python3}
# tf-slim 1.1.0 carries tf.contrib.layers.layer_norm unchanged; Google's modeling.py imports it from
# tensorflow.contrib, which TF 2.x no longer has, so the fixture aliases tensorflow.contrib -> tf_slim.
PINS=("tensorflow-cpu==2.15.1" "bert-tensorflow==1.0.4" "tf-slim==1.1.0" "numpy<2")

say() { printf '[setup-reference] %s\n' "$*" >&2; }

check() {
  "$ENV_DIR/bin/python" - <<'PYEOF' >/dev/null 2>&1
import sys, types, tensorflow as tf, numpy, tf_slim
sys.modules["tensorflow.contrib"] = types.SimpleNamespace(layers=tf_slim.layers)
import bert.modeling
assert tf.__version__ == "2.15.1", tf.__version__
assert numpy.__version__.startswith("1."), numpy.__version__
PYEOF
}

if [ -x "$ENV_DIR/bin/python" ] && [ -f "$ENV_DIR/.ready" ] && check; then
  say "$ENV_DIR is ready"
  exit 0
fi

if [ ! -x "$ENV_DIR/bin/python" ]; then
  say "creating virtualenv $ENV_DIR"
  mkdir -p "$(dirname "$ENV_DIR")"
  "$PYTHON" -m venv "$ENV_DIR"
fi
say "installing ${PINS[*]} (a few hundred MB, once)"
"$ENV_DIR/bin/pip" install -q --disable-pip-version-check "${PINS[@]}"
check || { say "the reference env at $ENV_DIR does not import tensorflow 2.15.1 + bert"; exit 1; }
touch "$ENV_DIR/.ready"
say "$ENV_DIR is ready"
