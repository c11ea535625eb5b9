"""`bert-pipeline models`: the model registry (bert_core.registry) from the command line.

    bert-pipeline models ls [REGISTRY] [NAME]                 every model, or NAME's versions
    bert-pipeline models show NAME[:VERSION] [--registry R]   metrics, gate decision, lineage, files
    bert-pipeline models publish NAME:VERSION [--registry R]  point published.json at a version
    bert-pipeline models rollback NAME [--registry R]         back to the version published before

REGISTRY defaults to $BERT_REGISTRY, else runs/registry (where `bert-pipeline run` registers). publish
and rollback go through the same compare-and-swap as the pipeline's publish step; publish also
repairs a torn or hand-edited pointer.
"""

from __future__ import annotations

import json
import os

from bert_core import registry, storage
from bert_core.errors import UserError

DEFAULT_REGISTRY = "runs/registry"


def default_registry() -> str:
    return os.environ.get("BERT_REGISTRY") or DEFAULT_REGISTRY


def _status(reg: registry.Registry, name: str, version: int, published: int | None,
            history: list | None = None) -> tuple[str, dict]:
    metrics = reg.read_version_json(name, version, registry.METRICS) \
        if storage.is_complete(reg.version_dir(name, version)) else None
    if metrics is None:
        return "incomplete", {}
    if version == published:
        return "published", metrics
    if version in (history or []):
        return "superseded", metrics  # published once, then another (or a rollback)
    decision = metrics.get("gate", {}).get("decision")
    return ("passed, not published" if decision == "published" else decision or "-"), metrics


def _short(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def cmd_ls(args) -> int:
    from bert_core.artifacts import render_table

    reg = registry.Registry(args.registry or default_registry())
    if args.name is None:
        reg.check()
        rows = []
        for name in reg.models():
            record, _ = reg.read_pointer(name, strict=False)
            shown = "-" if record is None else ("CORRUPT pointer" if "corrupt" in record else f"v{record['version']}")
            rows.append([name, len(reg.versions(name)), shown])
        print(render_table(["model", "versions", "published"], rows, align="lrl"))
        return 0
    reg.require_model(args.name)
    record, _ = reg.read_pointer(args.name)
    published = record["version"] if record else None
    rows = []
    for v in reg.versions(args.name):
        status, metrics = _status(reg, args.name, v, published, record.get("history") if record else None)
        numbers = metrics.get("numbers", {})
        rows.append([v, status, _num(numbers.get("heldout.masked_lm_loss")),
                     _num(numbers.get("finetune.accuracy")), _short(metrics.get("gate", {}).get("reason", ""))])
    print(render_table(["version", "status", "held-out MLM loss", "finetune accuracy", "gate"], rows, align="llrrl"))
    return 0


def _num(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def cmd_show(args) -> int:
    reg = registry.Registry(args.registry or default_registry())
    name, version = registry.parse_ref(args.ref)
    reg.require_model(name)
    record, _ = reg.read_pointer(name)
    published = record["version"] if record else None
    if version is None:
        if published is None:
            raise UserError(f"{name}: nothing is published in {reg.uri}; name a version ({name}:N)")
        version = published
    path = reg.require_version(name, version)
    status, metrics = _status(reg, name, version, published, record.get("history") if record else None)
    lineage = reg.read_version_json(name, version, registry.LINEAGE)
    print(f"{name}:{version}  {status}  ({path})")
    gate = metrics.get("gate", {})
    if gate:
        against = f"against v{gate['against_version']}" if gate.get("against_version") else "(first version)"
        print(f"\ngate: {gate.get('decision')} {against}: {gate.get('reason')}")
        print(f"rule: {gate.get('rule')}")
    print("\nmetrics:")
    against = metrics.get("published_numbers") or {}
    for key, value in sorted(metrics.get("numbers", {}).items()):
        other = f"   (v{gate.get('against_version')}: {against[key]:.4f})" if key in against else ""
        print(f"  {key:<34} {value:.4f}{other}")
    print("\nlineage:")
    print("  " + json.dumps(lineage, indent=2, sort_keys=True).replace("\n", "\n  "))
    marker = storage.read_json(storage.join(path, storage.COMPLETE_MARKER))
    print("\nfiles:")
    for f in marker.get("files", []):
        print(f"  {f['size']:>12,}  {f['path']}")
    return 0


def cmd_publish(args) -> int:
    reg = registry.Registry(args.registry or default_registry())
    name, version = registry.parse_ref(args.ref)
    if version is None:
        raise UserError(f"{args.ref}: expected NAME:VERSION (e.g. {name}:1)")
    record = reg.set_pointer(name, version, "publish", by="bert-pipeline models publish", repair=True)
    print(f"{name}: published version {record['version']} (pointer serial {record['serial']})")
    return 0


def cmd_rollback(args) -> int:
    reg = registry.Registry(args.registry or default_registry())
    name, version = registry.parse_ref(args.name)
    if version is not None:
        raise UserError(f"{args.name}: rollback takes a model NAME (to publish a given version: models publish "
                        f"{args.name})")
    before = reg.published(name)
    record = reg.rollback(name, by="bert-pipeline models rollback")
    print(f"{name}: rolled back from version {before} to version {record['version']}")
    return 0


def add_parser(sub) -> None:
    """The `models` subcommand and its actions, on bert-pipeline's subparsers."""
    p = sub.add_parser("models", help="the model registry: ls, show, publish, rollback")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))
    registry_help = f"the registry (default: $BERT_REGISTRY, else {DEFAULT_REGISTRY})"
    a = actions.add_parser("ls", help="models, or one model's versions with their status and gate")
    a.add_argument("registry", nargs="?", default=None, help=registry_help)
    a.add_argument("name", nargs="?", default=None)
    a.set_defaults(func=cmd_ls)
    a = actions.add_parser("show", help="a version's metrics, gate decision, lineage and files")
    a.add_argument("ref", metavar="NAME[:VERSION]")
    a.add_argument("--registry", default=None, help=registry_help)
    a.set_defaults(func=cmd_show)
    a = actions.add_parser("publish", help="publish a version (compare-and-swap of published.json)")
    a.add_argument("ref", metavar="NAME:VERSION")
    a.add_argument("--registry", default=None, help=registry_help)
    a.set_defaults(func=cmd_publish)
    a = actions.add_parser("rollback", help="publish the version published before the current one")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--registry", default=None, help=registry_help)
    a.set_defaults(func=cmd_rollback)
