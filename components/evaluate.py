"""Stage 4, evaluation: `bert evaluate` scores the fine-tuned model's predictions against the task's
gold labels; every number becomes a KFP metric, a classification task's confusion matrix (and a binary
task's ROC curve) a ClassificationMetrics artifact the UI draws, and the table and pictures (also the
regression scatter, SQuAD by answer type) an HTML report."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Output

from components.common import base_image


@dsl.component(base_image=base_image("evaluate"), install_kfp_package=False)
def evaluate(task_data: Input[Dataset], predictions: Input[Dataset], task_data_uri: str, task_name: str,
             text_a_column: str, text_b_column: str, label_column: str, has_header: bool, labels: str,
             eval_split: str, task_module: str, metrics: Output[Metrics], report: Output[HTML],
             classification: Output[ClassificationMetrics]):
    """`bert evaluate` on the gold `eval_split` (the split finetune predicted: test) -> metrics.json."""
    import os

    from bert_core import layout, storage
    from bert_core.reports import evaluation_report
    from components.common import evaluate_config, log_classification, log_numbers, run_stage, write_report

    config = evaluate_config(
        task_data.path, predictions.path, metrics.path, task_data_uri, text_b_column, labels, eval_split,
        task_module, task_name=task_name, text_a_column=text_a_column, label_column=label_column,
        has_header=has_header)
    run_stage("evaluate", config)
    log_numbers(metrics, storage.read_json(os.path.join(metrics.path, layout.EVAL_METRICS)))
    log_classification(classification, storage.read_json(os.path.join(metrics.path, layout.EVAL_DETAILS)))
    write_report(report, evaluation_report, metrics.path)
