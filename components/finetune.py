"""Stage 3, fine-tuning: `bert finetune` from the pretrained Model on a task's data (a GLUE task, the
generic tsv task such as the held-out sentence-pair task, or a task_module's task: bert_core.tasks),
then predict on its test split."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.common import base_image


@dsl.component(base_image=base_image("finetune"), install_kfp_package=False)
def finetune(pretrained: Input[Model], task_data: Input[Dataset], task_data_uri: str, task_name: str,
             text_a_column: str, text_b_column: str, label_column: str, has_header: bool, labels: str,
             max_seq_length: int, train_batch_size: int, eval_batch_size: int, learning_rate: float,
             num_train_epochs: float, warmup_proportion: float, optimizer_type: str, do_lower_case: bool,
             log_every_steps: int,
             seed: int, num_processes: int, task_module: str,
             model: Output[Model], predictions: Output[Dataset], metrics: Output[Metrics], report: Output[HTML]):
    """`bert finetune --do_train --do_eval --do_predict --export_dir`: checkpoints and a SavedModel
    (model/saved_model) as the Model, test_results.tsv as the predictions, finetune_metrics.json's
    numbers as Metrics, its curves as an HTML report."""
    from bert_core import layout, storage
    from bert_core.reports import training_report
    from components.common import finetune_config, log_numbers, run_stage, write_report

    config = finetune_config(
        pretrained.path, task_data.path, model.path, task_data_uri, text_b_column, labels, task_module,
        task_name=task_name,
        max_seq_length=max_seq_length, train_batch_size=train_batch_size, eval_batch_size=eval_batch_size,
        learning_rate=learning_rate, num_train_epochs=num_train_epochs, warmup_proportion=warmup_proportion,
        optimizer_type=optimizer_type, do_lower_case=do_lower_case, text_a_column=text_a_column,
        label_column=label_column, has_header=has_header, log_every_steps=log_every_steps, seed=seed)
    run_stage("finetune", config, num_processes=num_processes)
    storage.copy(storage.join(model.path, layout.TEST_RESULTS), predictions.path)
    results = storage.read_json(storage.join(model.path, layout.FINETUNE_METRICS))
    log_numbers(metrics, results)
    model.metadata.update({"task_name": task_name, "max_seq_length": max_seq_length,
                           "global_step": results.get("global_step"), "saved_model": layout.SAVED_MODEL_DIR,
                           "tensorboard": storage.join(model.uri, layout.SUMMARIES_DIR)})
    write_report(report, training_report, model.path, "finetune")
