"""Validate manifests as the API server and mpi-operator would, offline (shared by the cluster-side tests).

- `mpijob_problems(manifest)`: the MPIJob CRD's openAPIV3Schema (../shared/k8s/kubeflow.org_mpijobs.yaml)
  with jsonschema, read the way the API server reads a structural schema: `x-kubernetes-int-or-string`
  accepts an integer or a string; an object whose schema lists `properties` and neither
  `additionalProperties` nor `x-kubernetes-preserve-unknown-fields` has no other fields (the server
  would prune them silently, or reject them under strict field validation: either way a bug of ours);
  plus ObjectMeta's name rules and mpi-operator's own rules that the schema leaves out.
- `core_problems(doc)`: kubernetes-validate's offline schemas for core kinds, strict.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_PATH = ROOT.parent / "shared" / "k8s" / "kubeflow.org_mpijobs.yaml"
K8S_VERSION = "1.32.0"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _structural(node):
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _structural(v) for k, v in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
            and not preserve:
        node["additionalProperties"] = False
    for key in [k for k in node if k.startswith("x-kubernetes-")]:
        node.pop(key)
    return node


@functools.lru_cache(maxsize=1)
def mpijob_validator():
    import jsonschema
    crd = yaml.safe_load(CRD_PATH.read_text())
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    schema = _structural(copy.deepcopy(versions["v2beta1"]["schema"]["openAPIV3Schema"]))
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def operator_rule_problems(manifest: dict) -> list[str]:
    """mpi-operator's checks beyond the schema (its validation.go), and ObjectMeta's name rules."""
    problems = []
    meta = manifest.get("metadata") or {}
    name = meta.get("name") or ""
    if not _DNS1035_LABEL.match(name) or len(name) > 63:
        problems.append(f"metadata.name {name!r} is not a DNS-1035 label")
    if "namespace" in meta and not _DNS1123_LABEL.match(meta["namespace"] or ""):
        problems.append(f"metadata.namespace {meta['namespace']!r} is not a DNS-1123 label")
    for key, value in (meta.get("labels") or {}).items():
        if len(value) > 63 or (value and not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", value)):
            problems.append(f"label {key}={value!r} is not a valid label value")
    specs = (manifest.get("spec") or {}).get("mpiReplicaSpecs") or {}
    unknown = set(specs) - {"Launcher", "Worker"}
    if unknown:
        problems.append(f"unknown replica types {sorted(unknown)}")
    launcher = specs.get("Launcher")
    if launcher is None:
        problems.append("no Launcher replica spec")
    elif launcher.get("replicas", 1) not in (1,):
        problems.append(f"Launcher replicas must be 1, got {launcher.get('replicas')}")
    worker = specs.get("Worker")
    workers = (worker or {}).get("replicas", 1)
    workers = workers if isinstance(workers, int) else 1  # a wrong type is the schema's finding
    if worker is None or workers < 1:
        problems.append("Worker replicas must be at least 1")
    for role, spec in specs.items():
        if spec.get("restartPolicy", "Never") not in ("Always", "OnFailure", "Never", "ExitCode"):
            problems.append(f"{role}: restartPolicy {spec.get('restartPolicy')!r}")
        containers = (((spec.get("template") or {}).get("spec") or {}).get("containers")) or []
        if not containers:
            problems.append(f"{role}: no containers")
    for pod in (f"{name}-launcher", f"{name}-worker-{max(workers - 1, 0)}"):
        if len(pod) > 63 or not _DNS1123_LABEL.match(pod):
            problems.append(f"pod name {pod!r} would not be a DNS-1123 label")
    slots = (manifest.get("spec") or {}).get("slotsPerWorker", 1)
    if not isinstance(slots, int) or slots < 1:
        problems.append(f"slotsPerWorker must be a positive integer, got {slots!r}")
    return problems


def mpijob_problems(manifest: dict) -> list[str]:
    schema_errors = sorted(mpijob_validator().iter_errors(manifest), key=lambda e: list(e.absolute_path))
    problems = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in schema_errors]
    return problems + operator_rule_problems(manifest)


def core_problems(doc: dict) -> list[str]:
    import kubernetes_validate
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}: {err}"]
    return []
