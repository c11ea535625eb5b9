"""`bert publish`: a pretrained model becomes a new version in the registry, and the published one if
the gate passes.

    bert publish --registry=gs://b/registry --model_name=wiki-tiny --model_dir=runs/pretrain \
        --finetune_metrics=runs/evaluate/metrics.json --task_data_dir=runs/task \
        --gate_rule='finetune accuracy up by >= 0.5 points and masked-LM loss not worse'

1. read the pointer (bert_core.registry): the published version and the token to swap it with;
2. a continuing model keeps its vocab: a candidate whose vocab.txt differs from the published
   version's is refused in one line (a new vocab is a new model name);
3. score the candidate and the published version on the model's pinned held-out set
   (bert_core.heldout_eval; pinned now if this is the model's first run);
4. decide (bert_core.gate) on those numbers and the fine-tuned task's, side by side;
5. add the version (create-only: model files, metrics.json with the decision, lineage.json, marker
   last), passed or rejected alike;
6. if it passed, swap the pointer from the token read in 1; a publisher that lost the race says so,
   and its version stays unpublished.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

from bert_core import events, gate, heldout_eval, layout, lineage, registry, storage
from bert_core.config import PublishConfig
from bert_core.data.manifest import sha256_file
from bert_core.errors import UserError
from bert_core.run_dir import METADATA, WEIGHTS_NAME, latest_checkpoint

#: The run's files a version keeps beside the newest checkpoint (when they are there).
_KEPT = (layout.BERT_CONFIG, layout.VOCAB, layout.PRETRAIN_METRICS, layout.EVAL_RESULTS, layout.EVAL_RESULTS_JSON)
_TASK_FILES = ("test.tsv", "dev.tsv", "train.tsv")


def model_files(model_dir: str, saved_model_dir: str | None) -> dict[str, str]:
    """{name in the version: source}: the model directory's config, vocab and newest checkpoint, and
    the SavedModel under saved_model/."""
    ckpt = latest_checkpoint(model_dir)
    if ckpt is None:
        raise UserError(f"--model_dir={model_dir}: no complete checkpoint (ckpt-<step>/) to register")
    for need in (layout.BERT_CONFIG, layout.VOCAB):
        if not storage.exists(storage.join(model_dir, need)):
            raise UserError(f"--model_dir={model_dir}: no {need}; expected a pretraining output directory")
    files = {name: storage.join(model_dir, name) for name in _KEPT if storage.exists(storage.join(model_dir, name))}
    name = storage.basename(ckpt.path)
    for info in storage.list_files(ckpt.path):  # the weights, not the optimizer state or input positions
        rel = _relative(info.path, ckpt.path)
        if rel.startswith(f"{WEIGHTS_NAME}-{ckpt.step}.") or rel == METADATA:
            files[f"{name}/{rel}"] = info.path
    # TensorFlow's `checkpoint` state file, naming these weights, so the version directory is an
    # --init_checkpoint as it is (tf.train.latest_checkpoint).
    _SCRATCH.append(tempfile.mkdtemp(prefix="bert-publish-"))
    state = os.path.join(_SCRATCH[-1], "checkpoint")
    with open(state, "w") as f:
        f.write(f'model_checkpoint_path: "{name}/{WEIGHTS_NAME}-{ckpt.step}"\n'
                f'all_model_checkpoint_paths: "{name}/{WEIGHTS_NAME}-{ckpt.step}"\n')
    files["checkpoint"] = state
    if saved_model_dir:
        if not storage.isdir(saved_model_dir):
            raise UserError(f"--saved_model_dir={saved_model_dir}: no such directory")
        for info in storage.list_files(saved_model_dir):
            files[layout.SAVED_MODEL_DIR + "/" + _relative(info.path, saved_model_dir)] = info.path
    return files


def _relative(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/") if not storage.is_remote(path) \
        else path[len(root.rstrip("/")) + 1:]


def task_fingerprint(task_data_dir: str | None) -> str | None:
    """sha256 over the task's split files: the fine-tuning numbers of two versions compare only if equal."""
    if not task_data_dir:
        return None
    h = hashlib.sha256()
    found = False
    for name in _TASK_FILES:
        path = storage.join(task_data_dir, name)
        if storage.exists(path):
            h.update(name.encode() + b"\0" + storage.read_bytes(path))
            found = True
    return h.hexdigest() if found else None


def _finetune_numbers(path: str | None) -> dict[str, float]:
    if not path:
        return {}
    values = storage.read_json(path)
    if not isinstance(values, dict):
        raise UserError(f"--finetune_metrics={path}: expected a JSON object of numbers (bert evaluate's metrics.json)")
    return {f"finetune.{k}": float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def publish_main(cfg: PublishConfig) -> int:
    try:
        return _publish(cfg)
    finally:
        for path in _SCRATCH:
            shutil.rmtree(path, ignore_errors=True)


_SCRATCH: list[str] = []  # temporary directories of this process (the checkpoint state file)


def _publish(cfg: PublishConfig) -> int:
    reg = registry.Registry(cfg.registry)
    name = registry.check_name(cfg.model_name)
    gate.parse_rule(cfg.gate_rule)  # a bad rule fails before any work
    files = model_files(cfg.model_dir, cfg.saved_model_dir)
    vocab = storage.join(cfg.model_dir, layout.VOCAB)
    vocab_sha = sha256_file(vocab)
    pointer, token = reg.read_pointer(name)
    published = pointer["version"] if pointer else None
    published_metrics = reg.read_version_json(name, published, registry.METRICS) if published else {}
    if published:
        parent_vocab = published_metrics.get("vocab_sha256")
        if parent_vocab and parent_vocab != vocab_sha:
            raise UserError(f"{vocab}: this vocab (sha256 {vocab_sha[:12]}) is not {name}:{published}'s "
                            f"({parent_vocab[:12]}); a changed vocab is a new model: give another --model_name")

    heldout_docs = cfg.heldout_documents or (storage.join(cfg.task_data_dir, layout.HELDOUT_DOCUMENTS)
                                             if cfg.task_data_dir else None)
    heldout = heldout_eval.pinned_set(reg, name, heldout_docs, vocab, cfg.do_lower_case, cfg.max_seq_length,
                                      cfg.max_predictions_per_seq, cfg.run_id or f"pid{os.getpid()}")
    if heldout["vocab_sha256"] != vocab_sha:
        raise UserError(f"{vocab}: this vocab (sha256 {vocab_sha[:12]}) is not the one {name}'s held-out set was "
                        f"made with ({heldout['vocab_sha256'][:12]}); a changed vocab is a new model: give another "
                        f"--model_name")
    print(f"publish: scoring the candidate on {name}'s held-out set ({heldout['records']} records)", flush=True)
    numbers = {f"heldout.{k}": v for k, v in heldout_eval.score(cfg.model_dir, heldout, vocab).items()}
    numbers.update(_finetune_numbers(cfg.finetune_metrics))
    task_sha = task_fingerprint(cfg.task_data_dir)

    against, comparable = None, {}
    if published:
        print(f"publish: scoring {name}:{published} (published) on the same set", flush=True)
        pub_dir = reg.version_dir(name, published)
        against = {f"heldout.{k}": v for k, v in heldout_eval.score(pub_dir, heldout, vocab).items()}
        against.update({k: v for k, v in published_metrics.get("numbers", {}).items() if k.startswith("finetune.")})
        if published_metrics.get("task_sha256") != task_sha:
            comparable["finetune."] = f"the fine-tuning task data differ from v{published}'s"
    decision = gate.decide(cfg.gate_rule, numbers, against, published, comparable)

    extra = storage.read_json(cfg.lineage_file) if cfg.lineage_file else {}
    parent = None
    if cfg.parent_version:
        parent = {"model": name, "version": cfg.parent_version,
                  "path": reg.version_dir(name, cfg.parent_version)}
    doc = lineage.build(extra.get("corpus"), cfg.data_manifest, vocab, heldout, parent,
                        {**extra.get("stages", {}), "publish": cfg.model_dump()}, cfg.run_id)
    metrics = {"numbers": numbers, "published_numbers": against, "task_sha256": task_sha, "vocab_sha256": vocab_sha,
               "gate": decision.to_json()}
    version = reg.add_version(name, files, metrics, doc, {"run_id": cfg.run_id or None})
    events.emit("wrote", "publish", path=reg.version_dir(name, version))
    outcome = decision.to_json()["decision"]
    if decision.passed:
        try:
            reg.set_pointer(name, version, "publish", expect=token, by=cfg.run_id)
        except registry.LostRace as lost:
            outcome = "lost"
            decision.reason = f"{decision.reason}; but {lost}"
    label = f"{name}:{version}"
    markdown = decision.markdown(label)
    if outcome == "lost":
        markdown = markdown.replace("## Gate: PUBLISHED", "## Gate: PASSED, LOST THE RACE")
    if cfg.decision_file:
        storage.write_text(cfg.decision_file, markdown)
    print(markdown, flush=True)
    line = {"published": f"publish: {label} PUBLISHED ({decision.reason})",
            "rejected": f"publish: {label} REJECTED: {decision.reason}",
            "lost": f"publish: {label} NOT PUBLISHED: {decision.reason}"}[outcome]
    print(line, flush=True)
    if cfg.result_file:
        storage.write_json(cfg.result_file, {"model": name, "version": version, "decision": outcome,
                                             "reason": decision.reason, "numbers": numbers,
                                             "published_numbers": against, "against_version": published})
    events.emit("gate", "publish", decision=outcome, version=version, reason=decision.reason)
    return 0
