#!/usr/bin/env bash
# Create the virtualenv and install everything the project needs, on a fresh machine or an old one.
#   scripts/setup_env.sh [VENV_DIR] [--test]
# Versions come from pyproject.toml only. Horovod is built from source against the pinned TensorFlow;
# the built wheel is cached under a key that includes the TensorFlow version, because pip's own wheel
# cache ignores it and would hand an ABI-incompatible Horovod to a different TensorFlow.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
WITH_TEST=${2:-}
PYTHON=${PYTHON:-python3}

say() { printf '[setup] %s\n' "$*" >&2; }

# System packages: OpenMPI for Horovod and mpi4py (root or sudo; skipped when already present).
if ! command -v mpicc >/dev/null 2>&1 || ! command -v mpirun >/dev/null 2>&1; then
  say "installing OpenMPI (apt: libopenmpi-dev openmpi-bin)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenmpi-dev openmpi-bin >/dev/null
fi

# 7-Zip (`7zz`): prepare-corpus decodes whole bz2 inputs with it when it is there (a fifth less CPU
# than indexed_bzip2, its fallback; docs/data.md). Optional: a release without the package still sets up.
if ! command -v 7zz >/dev/null 2>&1 && ! command -v 7z >/dev/null 2>&1; then
  say "installing 7-Zip for bz2 corpus inputs (apt: 7zip)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq 7zip >/dev/null \
    || say "no apt package 7zip here: bz2 inputs are decoded by indexed_bzip2"
fi

# Tests only: headless Chromium renders the HTML reports as a person sees them (tests/browser.py).
if [ "$WITH_TEST" = "--test" ] && ! command -v chromium >/dev/null 2>&1; then
  say "installing Chromium for the report tests (apt: chromium)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
PIP="$VENV/bin/pip"
PY="$VENV/bin/python"

# Read the pins from pyproject.toml (the one source).
eval "$("$PY" - <<'PYEOF'
import shlex, tomllib
cfg = tomllib.load(open("pyproject.toml", "rb"))
extra = cfg["tool"]["bert-kubeflow"]
tf = next(d for d in cfg["project"]["dependencies"] if d.startswith("tensorflow-cpu=="))
print(f"TF_PIN={shlex.quote(tf)}")
print(f"TF_VERSION={shlex.quote(tf.split('==')[1])}")
print(f"HOROVOD_VERSION={shlex.quote(extra['horovod'])}")
print(f"HOROVOD_ENV={shlex.quote(extra['horovod-build-env'])}")
print("HOROVOD_BUILD_REQS=(" + " ".join(shlex.quote(r) for r in extra["horovod-build-requires"]) + ")")
print("NO_DEPS_TEST=(" + " ".join(shlex.quote(r) for r in extra["no-deps-test"]) + ")")
PYEOF
)"

say "installing bert-kubeflow and its pinned dependencies"
if [ "$WITH_TEST" = "--test" ]; then
  "$PIP" install -q -e ".[test,cluster]"
  "$PIP" install -q --no-deps "${NO_DEPS_TEST[@]}"
else
  "$PIP" install -q -e ".[cluster]"
fi

if ! "$PY" -c "import horovod.tensorflow" >/dev/null 2>&1; then
  "$PIP" install -q "${HOROVOD_BUILD_REQS[@]}"
  CACHE=${BERT_WHEEL_CACHE:-$HOME/.cache/bert-kubeflow/wheels}/tf-$TF_VERSION
  mkdir -p "$CACHE"
  if ! ls "$CACHE"/horovod-"$HOROVOD_VERSION"-*.whl >/dev/null 2>&1; then
    say "building horovod $HOROVOD_VERSION against $TF_PIN (about 5 minutes on 2 cores)"
    env $HOROVOD_ENV MAKEFLAGS=-j"$(nproc)" PATH="$PWD/$VENV/bin:$PATH" \
      "$PIP" wheel -q --no-deps --no-build-isolation --no-cache-dir -w "$CACHE" "horovod==$HOROVOD_VERSION"
  fi
  "$PIP" install -q "$CACHE"/horovod-"$HOROVOD_VERSION"-*.whl
fi
"$PY" -c "import horovod.tensorflow as hvd; assert hvd.gloo_built() and hvd.mpi_built()" \
  || { say "horovod is installed but lacks gloo or MPI support"; exit 1; }
say "ready: $VENV"
