"""The embedded configurations of `bert-pipeline run`.

DEFAULT is the job `make run` runs: the pipeline's own parameter defaults (see pipelines/pipeline.py:
Python's docs as the corpus, a 2,000-token vocab learned from it, bert-tiny pretrained for 600 steps
by 2 Horovod ranks on this host, then the held-out topic task (which of two topic groups a
sentence's document belongs to, bert_core.data.heldout_task) fine-tuned for 10 epochs and evaluated).
Nothing to download, no cluster. CI is the same graph made smaller for the end-to-end test (300
pretraining steps, dupe factor 2, 6 fine-tuning epochs).

A user's `--config file.yaml|json` has the same shape: pipeline parameters by name (a flat mapping),
plus `phase2: true` for the two-phase pipeline. Unknown names are an error.
"""

#: Overrides of the pipeline's parameter defaults for `bert-pipeline run` (none: the defaults are it).
DEFAULT: dict = {}

#: `bert-pipeline run --ci`: fewer masks and steps, for the end-to-end test (well under 5 minutes).
CI: dict = {
    "dupe_factor": 2,
    "num_train_steps": 300,
    "num_warmup_steps": 30,
    "log_every_steps": 50,
    "max_eval_steps": 10,
    "num_train_epochs": 6.0,
}

#: Where `bert-pipeline run` puts its artifacts unless --output-dir says otherwise.
RUN_DIR = "runs/pipeline"
