"""The model registry's two steps (bert_core.registry), lightweight components over bert_core:

    resolve-start   before the data: where pretraining starts (init_from=published: the registry's
                    published version, whose vocab the run keeps; else scratch or init_checkpoint),
                    and the corpus snapshot (bert_core.lineage) that keys the data steps' cache
    publish         after evaluate: `bert publish` (register the candidate, gate it against the
                    published version, publish it if it passes); the decision as Markdown and Metrics
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.common import base_image


@dsl.component(base_image=base_image("data"), install_kfp_package=False)
def resolve_start(registry_uri: str, model_name: str, init_from: str, init_checkpoint: str, vocab_uri: str,
                  corpus_uri: str, corpus_lineage: Output[Artifact]) -> NamedTuple(
                      "Start", [("init_checkpoint", str), ("vocab_uri", str), ("parent_version", int),
                                ("corpus_snapshot", str)]):
    """init_checkpoint, vocab_uri and parent_version for this run, and the corpus snapshot's hash."""
    from bert_core import events, lineage, storage
    from components.common import resolve_start_point

    with events.reporting_errors("resolve-start"):
        start = resolve_start_point(registry_uri, model_name, init_from, init_checkpoint, vocab_uri)
        snapshot = lineage.corpus_snapshot(corpus_uri)
        storage.write_json(corpus_lineage.path, snapshot)
    corpus_lineage.metadata.update({"snapshot": snapshot["snapshot"], "files": len(snapshot["files"]),
                                    "parent_version": start["parent_version"]})
    print(f"start: {start['reason']}; corpus snapshot {snapshot['snapshot'][:12]}", flush=True)
    outputs = NamedTuple("Start", [("init_checkpoint", str), ("vocab_uri", str), ("parent_version", int),
                                   ("corpus_snapshot", str)])
    return outputs(start["init_checkpoint"], start["vocab_uri"], start["parent_version"], snapshot["snapshot"])


# The finetune image: scoring the models on the held-out set needs TensorFlow (CPU is enough).
@dsl.component(base_image=base_image("finetune"), install_kfp_package=False)
def publish(pretrained: Input[Model], tuned: Input[Model], eval_metrics: Input[Metrics], task_data: Input[Dataset],
            data: Input[Dataset], corpus_lineage: Input[Artifact], registry_uri: str, model_name: str,
            gate_rule: str, parent_version: int, run_id: str, do_lower_case: bool, max_seq_length: int,
            max_predictions_per_seq: int, stage_parameters: dict, decision: Output[Markdown],
            metrics: Output[Metrics]):
    """`bert publish`: a new version of model_name in registry_uri, published if the gate passes."""
    import json
    import os
    import tempfile

    from bert_core import storage
    from components.common import log_numbers, publish_config, run_stage

    def _typed(value):
        """Pipeline parameters inside a dict reach the step as text ("300.0"): numbers and booleans back."""
        if isinstance(value, dict):
            return {k: _typed(v) for k, v in value.items()}
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except ValueError:
                return value
            if isinstance(parsed, float) and parsed.is_integer():
                return int(parsed)
            return parsed if isinstance(parsed, (int, float, bool)) else value
        return value

    if not registry_uri:
        with open(decision.path, "w") as f:
            f.write("## Gate\n\nNo registry_uri: nothing registered.\n")
        return
    scratch = tempfile.mkdtemp(prefix="bert-publish-step-")
    lineage_file, result_file = os.path.join(scratch, "lineage-inputs.json"), os.path.join(scratch, "result.json")
    with open(lineage_file, "w") as f:
        json.dump({"corpus": storage.read_json(corpus_lineage.path), "stages": _typed(stage_parameters)}, f)
    config = publish_config(pretrained.path, tuned.path, eval_metrics.path, task_data.path, data.path,
                            decision.path, registry_uri, model_name, gate_rule, parent_version, run_id,
                            lineage_file=lineage_file, result_file=result_file, do_lower_case=do_lower_case, max_seq_length=max_seq_length,
                            max_predictions_per_seq=max_predictions_per_seq)
    run_stage("publish", config)
    result = storage.read_json(result_file)
    log_numbers(metrics, result["numbers"], prefix="candidate.")
    log_numbers(metrics, result["published_numbers"] or {}, prefix="published.")
    metrics.log_metric("version", float(result["version"]))
    metrics.log_metric("now_published", 1.0 if result["decision"] == "published" else 0.0)
    decision.metadata.update({"model": f"{result['model']}:{result['version']}", "version": result["version"],
                              "decision": result["decision"], "reason": result["reason"]})
