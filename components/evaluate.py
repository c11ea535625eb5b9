"""Stage 4, evaluation: `bert evaluate` scores the fine-tuned model's predictions against the task's
gold labels; every number becomes a KFP metric, and the table a Markdown artifact for the UI."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from components.common import base_image


@dsl.component(base_image=base_image("evaluate"), install_kfp_package=False)
def evaluate(task_data: Input[Dataset], predictions: Input[Dataset], task_data_uri: str, task_name: str,
             text_a_column: str, text_b_column: str, label_column: str, has_header: bool, labels: str,
             eval_split: str, metrics: Output[Metrics], report: Output[Markdown]):
    """`bert evaluate` on the gold `eval_split` (the split finetune predicted: test) -> metrics.json."""
    import os

    from bert_core import layout, storage
    from bert_core.evaluation import format_table
    from components.common import log_numbers, run_stage, stage_config

    config = stage_config(
        "evaluate", task_name=task_name, output_dir=metrics.path, data_dir=task_data_uri or task_data.path,
        predictions_file=predictions.path, eval_split=eval_split or None, text_a_column=text_a_column,
        text_b_column=text_b_column or None, label_column=label_column, has_header=has_header,
        labels=labels or None)
    run_stage("evaluate", config)
    values = log_numbers(metrics, storage.read_json(os.path.join(metrics.path, layout.EVAL_METRICS)))
    with open(report.path, "w") as f:
        f.write(f"## Evaluation: {task_name}\n\n```\n{format_table(task_name, values)}\n```\n")
