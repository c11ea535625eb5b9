"""What `bert-pipeline run` leaves beside a local run's artifacts for people: the run record
(bert_core.layout.RUN_RECORD: the pipeline, every parameter's value, each artifact's producer and
consumers) and the run's report (layout.RUN_REPORT, bert_core.reports.run_report), which reads it.
`bert-pipeline artifacts compare` reads the records of the runs it compares."""

from __future__ import annotations

import os

from bert_core import layout, storage


def parameter_values(pipeline, arguments: dict) -> dict:
    """Every pipeline parameter's value in this run: its default unless `arguments` gives it."""
    from google.protobuf.json_format import MessageToDict

    spec = MessageToDict(pipeline.pipeline_spec)
    values = {name: p.get("defaultValue") for name, p in spec["root"]["inputDefinitions"]["parameters"].items()}
    values.update(arguments)
    return values


def lineage(pipeline) -> list[dict]:
    """[{artifact: "task/output", producer: task, consumers: [task, ...]}] from the compiled graph,
    in the order the tasks run (a task after the tasks it depends on, then by name)."""
    from google.protobuf.json_format import MessageToDict

    tasks = MessageToDict(pipeline.pipeline_spec)["root"]["dag"]["tasks"]
    consumers: dict[tuple[str, str], list[str]] = {}
    for name, task in tasks.items():
        for binding in task.get("inputs", {}).get("artifacts", {}).values():
            if source := binding.get("taskOutputArtifact"):
                consumers.setdefault((source["producerTask"], source["outputArtifactKey"]), []).append(name)
    spec = MessageToDict(pipeline.pipeline_spec)
    rows = []
    for name in _run_order(tasks):
        task = tasks[name]
        component = spec["components"][task["componentRef"]["name"]]
        for output in sorted(component.get("outputDefinitions", {}).get("artifacts", {})):
            rows.append({"artifact": f"{name}/{output}", "producer": name,
                         "consumers": sorted(consumers.get((name, output), []))})
    return rows


def _run_order(tasks: dict) -> list[str]:
    """The task names, each after the tasks it depends on (ties by name)."""
    after = {name: set(task.get("dependentTasks", [])) & set(tasks) for name, task in tasks.items()}
    order: list[str] = []
    while len(order) < len(after):
        ready = sorted(n for n, deps in after.items() if n not in order and deps <= set(order))
        order.append(ready[0] if ready else sorted(set(after) - set(order))[0])
    return order


def write_run_files(run_dir: str, pipeline, arguments: dict) -> str:
    """The run record, then the report; returns the report's path. The run has finished by then: a
    report that cannot be drawn is a page saying why (and a line on stderr), not a failed command."""
    import sys

    from bert_core.reports import page, run_report, write_html

    storage.write_json(os.path.join(run_dir, layout.RUN_RECORD), {
        "pipeline": pipeline.name, "parameters": parameter_values(pipeline, arguments), "lineage": lineage(pipeline)})
    try:
        html = run_report(run_dir)
    except Exception as err:  # noqa: BLE001 - the artifacts stand; say what the report lacks
        line = f"the run's report could not be drawn: {type(err).__name__}: {err}"
        print(f"warning: {line}", file=sys.stderr)
        html = page.render(pipeline.name, [page.note(line)])
    return write_html(os.path.join(run_dir, layout.RUN_REPORT), html)
