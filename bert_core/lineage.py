"""Lineage: what a registered version was made from, written as its `lineage.json`.

    corpus        the corpus snapshot: every input object or file with its size and its generation (gs://)
                  or ETag (s3://) or sha256 (local), and one `snapshot` hash over them all
    data          the data manifest's sha256 (data_manifest.json of the shards pretraining read)
    vocab         vocab.txt's sha256
    heldout       the pinned evaluation set the gate used (its documents' sha256, its records)
    parent        the version the run continued from (None: from scratch)
    stages        every stage's parameters, as the run gave them
    run           the pipeline run id, the code version (bert_core's version and the git commit, if known)

`corpus_snapshot` is also what keys a scheduled run's data steps (pipelines: caches keyed on the
snapshot, not the URI), so a corpus that changed is never trained on from a stale cache.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

from bert_core import storage
from bert_core.data.manifest import sha256_file


def corpus_snapshot(spec: str | None) -> dict:
    """{"files": [{path, size, generation | sha256}], "snapshot": sha256 over them}. No corpus (`""`):
    the embedded default, identified by the sha256 of its text."""
    if not spec:
        from bert_core.data.corpora import python_docs_documents

        h = hashlib.sha256()
        for doc in python_docs_documents():
            h.update(("\n".join(doc) + "\n\n").encode("utf-8"))
        files = [{"path": "python-docs (embedded default)", "sha256": h.hexdigest()}]
    else:
        from bert_core.data.corpus import expand_inputs

        files = []
        for path in expand_inputs(spec):
            info = storage.stat(path)
            entry = {"path": path, "size": info.size}
            if info.generation is not None:
                entry["generation"] = str(info.generation)
            else:
                entry["sha256"] = sha256_file(path)
            files.append(entry)
    digest = hashlib.sha256(repr(sorted((f["path"], f.get("size"), f.get("generation"), f.get("sha256"))
                                        for f in files)).encode()).hexdigest()
    return {"files": files, "snapshot": digest}


def code_version() -> dict:
    """bert_core's version, and the git commit of its checkout (env BERT_CODE_VERSION, else `git`)."""
    import bert_core

    commit = os.environ.get("BERT_CODE_VERSION", "")
    if not commit:
        try:
            here = os.path.dirname(os.path.abspath(bert_core.__file__))
            commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                                    timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
    return {"bert_core": bert_core.__version__, "commit": commit or None}


def build(corpus: dict | None, data_manifest: str | None, vocab_file: str, heldout: dict | None,
          parent: dict | None, stages: dict, run_id: str) -> dict:
    """The lineage document of one version."""
    return {
        "corpus": corpus,
        "data": {"manifest": data_manifest, "sha256": sha256_file(data_manifest)} if data_manifest else None,
        "vocab": {"sha256": sha256_file(vocab_file)},
        "heldout": None if heldout is None else {k: heldout[k] for k in (
            "path", "records", "documents_sha256", "vocab_sha256") if k in heldout},
        "parent": parent,
        "stages": stages,
        "run": {"id": run_id or None, "code": code_version()},
    }
