"""Inspecting a run's artifacts: what is under a prefix, and manifests and metrics as tables.

`bert-pipeline artifacts ls PREFIX` prints `format_listing(list_artifacts(PREFIX))` and
`bert-pipeline artifacts show PATH` prints `describe_artifact(PATH)`; `bert-pipeline artifacts download
PREFIX DIR` is `download_tree` (e.g. TensorBoard summaries off s3://). Local paths and gs:// alike
(through bert_core.storage); no kfp here.
"""

from __future__ import annotations

import dataclasses
import datetime
import json

from bert_core import layout, storage
from bert_core.errors import UserError


@dataclasses.dataclass(frozen=True)
class ArtifactRow:
    path: str
    size: int
    updated: datetime.datetime | None


def list_artifacts(prefix: str) -> list[ArtifactRow]:
    """Every file under `prefix` (a directory, a gs:// prefix, or one file), sorted by path."""
    rows = [ArtifactRow(i.path, i.size, i.updated) for i in storage.list_files(prefix)]
    if not rows:
        raise UserError(f"{prefix}: no artifacts there (no such directory or prefix, or it is empty)")
    return rows


def download_tree(prefix: str, local_dir: str) -> list[str]:
    """Every file under `prefix` (or the one file) into `local_dir`, paths below the prefix kept, each
    written atomically; returns the local paths."""
    import os

    base = prefix.rstrip("/")
    infos = [i for i in storage.list_files(base) if i.path == base or i.path.startswith(base + "/")]
    if not infos:
        raise UserError(f"{prefix}: nothing to download (no such directory or prefix, or it is empty)")
    out = []
    for info in infos:
        rel = info.path[len(base) + 1:] if info.path != base else storage.basename(base)
        out.append(os.path.join(local_dir, *rel.split("/")))
        storage.download(info.path, out[-1])
    return out


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_listing(rows: list[ArtifactRow], prefix: str | None = None) -> str:
    """A table of path (relative to `prefix` if given), size and update time (UTC), plus a total."""
    base = (prefix.rstrip("/") + "/") if prefix else ""
    body = []
    for r in rows:
        name = r.path[len(base):] if base and r.path.startswith(base) else r.path
        when = r.updated.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if r.updated else "-"
        body.append([name, human_size(r.size), when])
    total = sum(r.size for r in rows)
    table = render_table(["path", "size", "updated (UTC)"], body, align="lrl")
    return table + f"\n{len(rows)} file{'s' if len(rows) != 1 else ''}, {human_size(total)}"


def render_table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A plain-text table; `align` is one 'l' or 'r' per column (numbers default to right)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    if align is None:
        align = "".join("r" if rows and all(_is_number(r[i]) for r in rows if i < len(r)) else "l"
                        for i in range(len(headers)))

    def line(values):
        out = [v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(values, widths, align)]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)) and all(not isinstance(x, (dict, list)) for x in v):
        text = ", ".join(_cell(x) for x in v)
        return text if len(text) <= 80 else text[:77] + "..."
    if isinstance(v, (dict, list)):
        text = json.dumps(v, sort_keys=False)
        return text if len(text) <= 80 else text[:77] + "..."
    return str(v)


def _flatten(obj, prefix: str = "") -> tuple[list[list], dict[str, list[dict]]]:
    """Scalars as (dotted key, value) rows; lists of records set aside as their own tables."""
    rows, tables = [], {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            sub_rows, sub_tables = _flatten(value, name + ".")
            rows += sub_rows
            tables.update(sub_tables)
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            tables[name] = value
        else:
            rows.append([name, value])
    return rows, tables


def render_json(obj, title: str | None = None, max_records: int = 50) -> str:
    """A manifest or metrics document as tables: key/value for scalars (nested keys dotted), one
    table per list of records (e.g. shards, per-step metrics; the first and last rows if long)."""
    parts = [title] if title else []
    if isinstance(obj, list) and all(isinstance(x, dict) for x in obj):
        parts.append(_records_table(obj, max_records))
        return "\n".join(parts)
    if not isinstance(obj, dict):
        parts.append(_cell(obj))
        return "\n".join(parts)
    rows, tables = _flatten(obj)
    if rows:
        parts.append(render_table(["key", "value"], rows, align="ll"))
    for name, records in tables.items():
        parts.append(f"\n{name} ({len(records)} rows)")
        parts.append(_records_table(records, max_records))
    return "\n".join(parts)


def _records_table(records: list[dict], max_records: int) -> str:
    columns: list[str] = []
    for r in records:
        for k in r:
            if k not in columns:
                columns.append(k)
    shown = records
    if len(records) > max_records:
        half = max_records // 2
        shown = records[:half] + [None] + records[-half:]
    rows = [[("..." if i == 0 else "") for i in range(len(columns))] if r is None
            else [r.get(c) for c in columns] for r in shown]
    align = "".join("r" if all(_is_number(r.get(c)) for r in records if c in r) else "l" for c in columns)
    return render_table(columns, rows, align=align)


def describe_artifact(path: str) -> str:
    """What `artifacts show PATH` prints.

    A JSON file (a data manifest, metrics) is rendered as tables; a directory / prefix shows its
    completion marker state, its known JSON documents (bert_core.layout.DOCUMENTS, then any other
    *metrics.json) as tables, and a listing of its files; any other file, its size and update time."""
    if storage.isdir(path):
        rows = list_artifacts(path)
        parts = [f"{path}  ({'complete' if storage.is_complete(path) else 'no completion marker'})"]
        names = {r.path[len(path.rstrip('/')) + 1:]: r.path for r in rows}
        documents = [n for n in layout.DOCUMENTS if n in names]
        documents += sorted(n for n in names if "/" not in n and n.endswith("metrics.json") and n not in documents)
        for name in documents:
            parts.append("\n" + _describe_json(names[name], title=name))
        parts.append("\nfiles")
        parts.append(format_listing(rows, prefix=path))
        return "\n".join(parts)
    if not storage.exists(path):
        raise UserError(f"{path}: no such file or object")
    if path.endswith(".json"):
        return _describe_json(path, title=path)
    info = storage.list_files(path)[0]
    return format_listing([ArtifactRow(info.path, info.size, info.updated)])


def _describe_json(path: str, title: str) -> str:
    return render_json(storage.read_json(path), title=title)
