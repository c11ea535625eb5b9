"""bert_pipeline: the stages (corpus and vocab, create-data, pretrain, finetune and evaluate) as one KFP v2
pipeline.

    resolve-start (the registry's published version, or scratch; the corpus snapshot)
      │
    corpus ──> vocab (given, learned, or the published version's)
      │          │
      └──> create-data ──> pretrain (phase 1) [──> create-data-512 ──> pretrain (phase 2)]
                                 │
      corpus's held-out task ──> finetune ──> evaluate ──> publish (the gate; bert_core.registry)

The parameter defaults are the embedded default job (`bert-pipeline run`): Python's own docs as the
corpus, a vocab learned from it, a tiny BERT pretrained by 2 Horovod ranks on the step's host, and a
single-sentence topic task from held-out documents. On a cluster, override them (corpus_uri,
launcher=mpijob, bert_model, ...).

Phase 2 is chosen when the pipeline is built (`build_pipeline(phase2=True)`, `--phase2` on the command
line), not by a runtime `dsl.If`: kfp 2.13's local runner does not run conditions, and `bert-pipeline
run` must run the very graph the cluster runs. The same holds for "vocab given, or learned" and "task
given, or held out": a step's parameter (`vocab_uri`, `task_data_uri`) decides, not a branch.

What a cluster fixes when the pipeline is built, not per run (build_pipeline's arguments, `bert-pipeline
compile/submit/schedule`'s flags): where the pretraining step runs (`mpijob=True`: on the launcher image,
off GPU nodes), a key Secret for gs:// (`gcs_key_secret`), KFP's MinIO Secret for minio://
(`minio_secret`), registry pull secrets (`image_pull_secrets`)
and whether the data steps may reuse cached results (`caching=False` for recurring runs); the images'
registry and tag are the ones components/images.py resolves at compile time, also for the MPIJob the
step creates.
"""


from kfp import dsl, kubernetes

from components import images
from components.data import create_data, prepare_corpus
from components.evaluate import evaluate
from components.finetune import finetune
from bert_core.storage_s3 import MINIO_SECRET_DIR
from components.mpijob import GCS_KEY_DIR, GPU_RESOURCE, PretrainJob
from components.pretrain import pretrain, pretrain_phase2
from components.registry import publish, resolve_start
from components.vocab import learn_vocab

PIPELINE_NAME = "bert-pipeline"
PIPELINE_NAME_PHASE2 = "bert-pipeline-two-phase"
DESCRIPTION = ("BERT: corpus + vocab -> create-data -> pretrain (TensorFlow 2 + Horovod) -> finetune -> "
               "evaluate")

STEP_SHM_SIZE = "16Gi"   # /dev/shm of a GPU step (memory: it counts against the pod's memory)
# The pretraining step that only creates an MPIJob and follows it.
LAUNCHER_STEP_CPU, LAUNCHER_STEP_MEMORY = "500m", "1Gi"

# GPU nodes: the same selector and toleration as the pretraining MPIJob's workers (one source).
GPU_NODE_SELECTOR: dict = PretrainJob.model_fields["node_selector"].default_factory()
GPU_TOLERATIONS: list = [t.model_dump(exclude_none=True)
                         for t in PretrainJob.model_fields["tolerations"].default_factory()]


def _on_gpu_nodes(task: dsl.PipelineTask, gpus) -> dsl.PipelineTask:
    _with_shm(task)
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(gpus)
    for key, value in GPU_NODE_SELECTOR.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in GPU_TOLERATIONS:
        kubernetes.add_toleration(task, **toleration)
    return task


def _cpu_step(task: dsl.PipelineTask, name: str, cpu: str, memory: str, cache: bool, retries: int):
    task.set_display_name(name).set_cpu_request(cpu).set_memory_request(memory)
    task.set_caching_options(cache)
    if retries:
        task.set_retry(num_retries=retries, backoff_duration="30s", backoff_factor=2)
    return task


def _with_keys(task: dsl.PipelineTask, gcs_key_secret: str | None, minio_secret: str | None) -> dsl.PipelineTask:
    """Mount the key Secret where GOOGLE_APPLICATION_CREDENTIALS points, and KFP's MinIO Secret where
    bert_core.storage_s3 reads minio:// keys; a launcher step passes both on to its MPIJob
    (components.launcher.inherit_from_pod)."""
    if gcs_key_secret:
        kubernetes.use_secret_as_volume(task, secret_name=gcs_key_secret, mount_path=GCS_KEY_DIR)
        task.set_env_variable("GOOGLE_APPLICATION_CREDENTIALS", f"{GCS_KEY_DIR}/key.json")
    if minio_secret:
        kubernetes.use_secret_as_volume(task, secret_name=minio_secret, mount_path=MINIO_SECRET_DIR)
    return task


def _with_shm(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """A memory emptyDir at /dev/shm: a container's own is 64 MiB, RCCL needs far more."""
    return kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                      size_limit=STEP_SHM_SIZE)


def build_pipeline(phase2: bool = False, gcs_key_secret: str | None = None, mpijob: bool = False,
                   image_pull_secrets: tuple[str, ...] = (), caching: bool = True, minio_secret: str | None = None):
    """The pipeline function (phase 1 only, or phases 1 and 2).

    caching: False for recurring runs: no step reuses a cached result. KFP's cache key is a step's
    inputs, and the corpus step's input is the corpus URI, not its contents, so a cached data step
    would train every scheduled run on the corpus as it was the first time. (kfp 2.13's
    `Client.create_recurring_run(enable_caching=False)` does not do this for an uploaded pipeline
    version: it rewrites only a package it is given inline.)

    image_pull_secrets: Secrets for a private registry, on every step (and so on the MPIJob).
    mpijob: pretraining runs as MPIJobs on the cluster. The pretraining steps then only talk to the
    Kubernetes API: they run on the small launcher image, on any node, without a GPU, and pass
    launcher=mpijob whatever the run's `launcher` parameter says. Chosen when the pipeline is built
    because a step's image and node placement are (the run-time `launcher` parameter cannot move a
    step off a GPU node).

    minio_secret: KFP's MinIO credentials Secret (`mlpipeline-minio-artifact` in a Kubeflow profile
    namespace: keys accesskey, secretkey) for minio:// paths, mounted into every step (and the MPIJob),
    e.g. when the pipeline root is KFP's default minio://mlpipeline/v2/artifacts; None when the
    steps reach object storage otherwise (gs://, or s3:// with AWS_* credentials).
    gcs_key_secret: a Secret with a service-account key.json that every step (and the MPIJob) uses for
    gs://; None for Workload Identity, which follows the run's service account. It is chosen when the
    pipeline is built: a Secret volume cannot have an empty name, so a run-time parameter could not
    default to "no key".
    """

    @dsl.pipeline(name=PIPELINE_NAME_PHASE2 if phase2 else PIPELINE_NAME, description=DESCRIPTION)
    def bert_pipeline(
        # corpus and vocab
        corpus_uri: str = "",
        corpus_format: str = "auto",
        corpus_text_field: str = "text",
        heldout_fraction: float = 0.3,
        vocab_uri: str = "",
        vocab_size: int = 2000,
        do_lower_case: bool = True,
        # create-data
        max_seq_length: int = 64,
        max_predictions_per_seq: int = 10,
        masked_lm_prob: float = 0.15,
        dupe_factor: int = 5,
        short_seq_prob: float = 0.1,
        do_whole_word_mask: bool = False,
        num_shards: int = 2,
        data_workers: int = 2,
        random_seed: int = 12345,
        # pretraining
        bert_model: str = "bert-tiny",
        bert_config: dict = {},
        init_checkpoint: str = "",
        launcher: str = "local",
        num_processes: int = 2,
        pretrain_gpus: int = 0,
        mpijob_workers: int = 1,
        mpijob_gpus_per_worker: int = 8,
        pretrain_timeout_seconds: int = 0,
        train_batch_size: int = 16,
        learning_rate: float = 3e-4,
        num_train_steps: int = 600,
        num_warmup_steps: int = 60,
        optimizer_type: str = "adam",
        dtype: str = "fp32",
        num_accumulation_steps: int = 1,
        save_checkpoints_steps: int = 1000,
        log_every_steps: int = 100,
        max_eval_steps: int = 20,
        # phase 2 (used by the two-phase pipeline)
        phase2_max_seq_length: int = 512,
        phase2_max_predictions_per_seq: int = 80,
        phase2_train_batch_size: int = 4,
        phase2_learning_rate: float = 5e-4,
        phase2_num_train_steps: int = 100,
        phase2_num_warmup_steps: int = 10,
        # fine-tuning task: empty task_data_uri = the corpus's held-out topic task (single sentences);
        # task_module: a URI of a .py file registering task_name (bert_core.tasks), read by the steps
        task_data_uri: str = "",
        task_name: str = "tsv",
        task_module: str = "",
        text_a_column: str = "sentence",
        text_b_column: str = "",
        label_column: str = "label",
        has_header: bool = True,
        labels: str = "0,1",
        eval_split: str = "test",
        finetune_max_seq_length: int = 64,
        finetune_batch_size: int = 16,
        finetune_eval_batch_size: int = 32,
        finetune_learning_rate: float = 1e-3,
        finetune_optimizer_type: str = "nadam",
        num_train_epochs: float = 10.0,
        warmup_proportion: float = 0.1,
        finetune_processes: int = 1,
        finetune_gpus: int = 0,
        # the model registry (bert_core.registry): continue from its published version, publish through the gate
        registry_uri: str = "runs/registry",
        model_name: str = "bert-tiny-python-docs",
        init_from: str = "published",
        gate_rule: str = "masked-LM loss not worse and finetune accuracy not worse by more than 2 points",
    ):
        def step(task: dsl.PipelineTask, *args, **kwargs) -> dsl.PipelineTask:
            if image_pull_secrets:
                kubernetes.set_image_pull_secrets(task, list(image_pull_secrets))
            return _cpu_step(_with_keys(task, gcs_key_secret, minio_secret), *args, **kwargs)

        # Never cached: it reads the registry and the corpus as they are now. Its corpus snapshot is an
        # input of the corpus step, so the data steps' cache is keyed on the corpus's contents.
        start = step(resolve_start(registry_uri=registry_uri, model_name=model_name, init_from=init_from,
                                   init_checkpoint=init_checkpoint, vocab_uri=vocab_uri, corpus_uri=corpus_uri),
                     "resolve-start", "500m", "1Gi", cache=False, retries=2)
        corpus = step(prepare_corpus(corpus_uri=corpus_uri, corpus_format=corpus_format,
                                     corpus_text_field=corpus_text_field, heldout_fraction=heldout_fraction,
                                     seed=random_seed, corpus_snapshot=start.outputs["corpus_snapshot"]),
                      "corpus", "1", "2Gi", cache=caching, retries=2)
        vocab = step(learn_vocab(corpus=corpus.outputs["corpus"], vocab_uri=start.outputs["vocab_uri"],
                                 vocab_size=vocab_size, do_lower_case=do_lower_case),
                     "vocab", "2", "4Gi", cache=caching, retries=2)

        def data_step(name: str, seq: int, predictions: int):
            return step(create_data(
                corpus=corpus.outputs["corpus"], vocab=vocab.outputs["vocab"], do_lower_case=do_lower_case,
                max_seq_length=seq, max_predictions_per_seq=predictions, masked_lm_prob=masked_lm_prob,
                dupe_factor=dupe_factor, short_seq_prob=short_seq_prob, do_whole_word_mask=do_whole_word_mask,
                num_shards=num_shards, num_workers=data_workers, random_seed=random_seed),
                name, "2", "8Gi", cache=caching, retries=2)

        def pretrain_step(name: str, data, seq, predictions, batch, lr, steps, warmup, init_model=None):
            if init_model is None:
                component, extra = pretrain, {"init_checkpoint": start.outputs["init_checkpoint"]}
            else:
                component, extra = pretrain_phase2, {"init_model": init_model}
            task = component(
                data=data.outputs["data"], vocab=vocab.outputs["vocab"], launcher="mpijob" if mpijob else launcher,
                num_processes=num_processes, bert_model=bert_model, bert_config=bert_config,
                max_seq_length=seq, max_predictions_per_seq=predictions, train_batch_size=batch,
                learning_rate=lr, num_train_steps=steps, num_warmup_steps=warmup, optimizer_type=optimizer_type,
                dtype=dtype, num_accumulation_steps=num_accumulation_steps,
                save_checkpoints_steps=save_checkpoints_steps, log_every_steps=log_every_steps,
                max_eval_steps=max_eval_steps, random_seed=random_seed, mpijob_workers=mpijob_workers,
                mpijob_gpus_per_worker=mpijob_gpus_per_worker, timeout_seconds=pretrain_timeout_seconds,
                **extra)
            # With launcher=mpijob this step creates an MPIJob whose image components.images resolves
            # inside the step's pod: give it this compile's registry and tag, not the defaults.
            for var, value in images.env().items():
                task.set_env_variable(var, value)
            # A rerun resumes from the latest checkpoint in the output, so a retry is safe; a cached
            # result would make a scheduled re-pretraining a no-op, so no caching.
            if mpijob:
                task.set_container_image(images.image("launcher"))
                return step(task, name, LAUNCHER_STEP_CPU, LAUNCHER_STEP_MEMORY, cache=False, retries=1)
            step(task, name, "4", "16Gi", cache=False, retries=1)
            return _on_gpu_nodes(task, pretrain_gpus)

        data = data_step("create-data", max_seq_length, max_predictions_per_seq)
        pretrained = pretrain_step("pretrain", data, max_seq_length, max_predictions_per_seq, train_batch_size,
                                   learning_rate, num_train_steps, num_warmup_steps)
        if phase2:
            data2 = data_step("create-data-phase2", phase2_max_seq_length, phase2_max_predictions_per_seq)
            pretrained = pretrain_step("pretrain-phase2", data2, phase2_max_seq_length,
                                       phase2_max_predictions_per_seq, phase2_train_batch_size,
                                       phase2_learning_rate, phase2_num_train_steps, phase2_num_warmup_steps,
                                       init_model=pretrained.outputs["model"])

        task = dict(task_data_uri=task_data_uri, task_name=task_name, task_module=task_module,
                    text_a_column=text_a_column,
                    text_b_column=text_b_column, label_column=label_column, has_header=has_header, labels=labels)
        tuned = finetune(
            pretrained=pretrained.outputs["model"], task_data=corpus.outputs["task_data"],
            max_seq_length=finetune_max_seq_length, train_batch_size=finetune_batch_size,
            eval_batch_size=finetune_eval_batch_size, learning_rate=finetune_learning_rate,
            num_train_epochs=num_train_epochs, warmup_proportion=warmup_proportion,
            optimizer_type=finetune_optimizer_type, do_lower_case=do_lower_case,
            log_every_steps=log_every_steps, seed=random_seed, num_processes=finetune_processes, **task)
        _on_gpu_nodes(step(tuned, "finetune", "4", "16Gi", cache=False, retries=0), finetune_gpus)
        evaluated = step(evaluate(task_data=corpus.outputs["task_data"], predictions=tuned.outputs["predictions"],
                                  eval_split=eval_split, **task), "evaluate", "1", "2Gi", cache=False, retries=2)
        # The stages' parameters, for the version's lineage.json.
        stage_parameters = {
            "pretrain": {"bert_model": bert_model, "init_from": init_from, "train_batch_size": train_batch_size,
                         "learning_rate": learning_rate, "num_train_steps": num_train_steps,
                         "num_warmup_steps": num_warmup_steps, "optimizer_type": optimizer_type, "dtype": dtype,
                         "max_seq_length": max_seq_length, "random_seed": random_seed, "num_processes": num_processes},
            "finetune": {"task_name": task_name, "learning_rate": finetune_learning_rate,
                         "num_train_epochs": num_train_epochs, "train_batch_size": finetune_batch_size,
                         "optimizer_type": finetune_optimizer_type, "eval_split": eval_split},
            "corpus": {"corpus_uri": corpus_uri, "heldout_fraction": heldout_fraction, "vocab_uri": vocab_uri,
                       "vocab_size": vocab_size}}
        step(publish(pretrained=pretrained.outputs["model"], tuned=tuned.outputs["model"],
                     eval_metrics=evaluated.outputs["metrics"], task_data=corpus.outputs["task_data"],
                     data=data.outputs["data"], corpus_lineage=start.outputs["corpus_lineage"],
                     registry_uri=registry_uri, model_name=model_name, gate_rule=gate_rule,
                     parent_version=start.outputs["parent_version"], run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                     do_lower_case=do_lower_case, max_seq_length=max_seq_length,
                     max_predictions_per_seq=max_predictions_per_seq, stage_parameters=stage_parameters),
             "publish", "2", "4Gi", cache=False, retries=1)

    return bert_pipeline


#: The phase-1 pipeline, as `bert-pipeline compile` writes it by default.
bert_pipeline = build_pipeline(phase2=False)
