"""`bert-pipeline submit / schedule / list / status` against a KFP server, and `artifacts ls / show`.

No Kubeflow Pipelines server can run here, so these tests talk to tests/kfp_api_server.py: a local
HTTP server on 127.0.0.1 that serves the few KFP v2beta1 REST endpoints the commands call and checks
every request against kfp-server-api's own v2beta1 models (unknown or mistyped fields, bad enums,
required fields; the uploaded package must parse as a PipelineSpec; a run's parameters must be inputs
of the uploaded pipeline). It is a stand-in for the real API server's request checking, not for its
scheduling: runs stay PENDING. It also serves HTTPS with a throwaway certificate, for the TLS flags.
The artifacts commands run against the fake GCS server (tests/gcs_server.py).
"""

import json

import pytest

from pipelines import cli
from tests.kfp_api_server import kfp_server, start_server, tls_files  # noqa: F401  (fixture)

pytest_plugins = ["tests.gcs_server"]


def bp(capsys, *argv) -> tuple[int, str, str]:
    """Run `bert-pipeline ARGV` in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.fixture(autouse=True)
def _no_kfp_context(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json


TINY = {"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 16, "max_position_embeddings": 64, "type_vocab_size": 2}


def test_submit_uploads_once_then_adds_versions_and_runs_with_parameters(kfp_server, capsys):
    code, out, err = bp(capsys, "submit", "--host", kfp_server.url, "--experiment", "nightly",
                        "-p", "num_train_steps=100", "-p", "launcher=mpijob", "-p", f"bert_config={json.dumps(TINY)}")
    assert code == 0, err
    assert kfp_server.state.errors == []
    (pipeline,) = kfp_server.state.pipelines.values()
    assert pipeline.display_name == "bert-pipeline"
    (run,) = kfp_server.state.runs.values()
    assert f"run {run.run_id} created in experiment nightly" in out
    assert run.runtime_config.parameters == {"num_train_steps": 100, "launcher": "mpijob", "bert_config": TINY}
    assert run.pipeline_version_reference.pipeline_id == pipeline.pipeline_id

    code, out, err = bp(capsys, "submit", "--host", kfp_server.url, "--experiment", "nightly")
    assert code == 0, err
    assert kfp_server.state.errors == []
    assert len(kfp_server.state.pipelines) == 1 and len(kfp_server.state.versions[pipeline.pipeline_id]) == 2
    assert len(kfp_server.state.experiments) == 1  # reused by name
    second = [r for r in kfp_server.state.runs.values() if r.run_id != run.run_id][0]
    assert second.pipeline_version_reference.pipeline_version_id == \
        kfp_server.state.versions[pipeline.pipeline_id][1].pipeline_version_id
    assert [p for m, p, _, _ in kfp_server.state.requests if m == "POST"].count("/apis/v2beta1/pipelines/upload") == 1


def _tasks_caching(server, version_id: str) -> dict[str, bool]:
    tasks = server.state.specs[version_id]["root"]["dag"]["tasks"]
    return {name: bool(task.get("cachingOptions", {}).get("enableCache")) for name, task in tasks.items()}


def test_submit_with_the_build_flags(kfp_server, capsys):
    """--mpijob, --gcs-key-secret and --image-pull-secret reach the uploaded pipeline (build_pipeline's)."""
    from tests.test_pipeline_compile import assert_cluster_build

    code, _, err = bp(capsys, "submit", "--host", kfp_server.url, "--mpijob", "--gcs-key-secret", "gcp-sa-key",
                      "--image-pull-secret", "regcred", "--image-pull-secret", "mirror")
    assert code == 0, err
    assert kfp_server.state.errors == []
    (run,) = kfp_server.state.runs.values()
    version_id = run.pipeline_version_reference.pipeline_version_id
    assert_cluster_build(kfp_server.state.specs[version_id], kfp_server.state.platforms[version_id], "gcp-sa-key",
                         ["regcred", "mirror"])
    # a submitted run keeps the data steps' cache; --no-cache turns every step's off
    assert _tasks_caching(kfp_server, version_id)["create-data"] is True
    assert bp(capsys, "submit", "--host", kfp_server.url, "--no-cache")[0] == 0
    latest = kfp_server.state.versions[run.pipeline_version_reference.pipeline_id][-1].pipeline_version_id
    assert not any(_tasks_caching(kfp_server, latest).values())


@pytest.mark.parametrize("argv, message", [
    (["--gcs-key-secret", "GCP_Key"], "--gcs-key-secret 'GCP_Key': not a Kubernetes Secret name"),
    (["--image-pull-secret", ""], "--image-pull-secret '': not a Kubernetes Secret name"),
    (["--minio-secret", "mlpipeline_minio"], "--minio-secret 'mlpipeline_minio': not a Kubernetes Secret name"),
])
def test_bad_secret_names_are_one_line_before_any_request(kfp_server, capsys, argv, message):
    code, _, err = bp(capsys, "submit", "--host", kfp_server.url, *argv)
    assert code == 2 and err.startswith("bert-pipeline: error: ") and message in err and err.count("\n") == 1
    assert kfp_server.state.requests == []


def test_submit_config_file_and_two_phase(kfp_server, capsys, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("corpus_uri: gs://bucket/wiki/*.txt\nphase2: true\nphase2_num_train_steps: 20\n")
    code, out, err = bp(capsys, "submit", "--host", kfp_server.url, "--config", str(config))
    assert code == 0, err
    (pipeline,) = kfp_server.state.pipelines.values()
    assert pipeline.display_name == "bert-pipeline-two-phase"
    (run,) = kfp_server.state.runs.values()
    assert run.runtime_config.parameters == {"corpus_uri": "gs://bucket/wiki/*.txt", "phase2_num_train_steps": 20}


@pytest.mark.parametrize("argv, message", [
    (["-p", "num_train_step=5"], "--param: unknown pipeline parameter 'num_train_step' (did you mean "),
    (["-p", "num_train_steps=many"], "--param: num_train_steps: expected an integer, got 'many'"),
    (["-p", "bert_config=[1]"], "--param: bert_config: expected a JSON object"),
    (["-p", "oops"], "--param 'oops': expected NAME=VALUE"),
    # every stage's config, built before the first step as its step builds it
    (["-p", "num_warmup_steps=900"], "step pretrain (bert pretrain): --num_warmup_steps=900 exceeds "
                                     "--num_train_steps=600"),
    (["-p", "finetune_learning_rate=0"], "step finetune (bert finetune): --learning_rate: Input should be greater "
                                         "than 0 (got 0.0) (--learning_rate is the pipeline parameter "
                                         "finetune_learning_rate)"),
    (["-p", "bert_config={\"vocab_size\": 10}"], "step pretrain (bert pretrain): bert_config: hidden_size: "
                                                  "Field required"),
    (["-p", "bert_model=bert-huge"], "step pretrain (bert pretrain): --model: unknown model, expected one of "),
    (["-p", "launcher=ssh"], "step pretrain (bert pretrain): launcher='ssh': expected local or mpijob"),
    (["-p", "masked_lm_prob=0.5"], "step create-data (bert create-data): --max_predictions_per_seq=10 is below "
                                   "masked_lm_prob * max_seq_length = 32"),
    (["-p", "task_name=squadd"], "step finetune (bert finetune): --task_name: unknown task, expected one of "),
    (["-p", "corpus_uri=gs://b/wiki.xml.bz2", "-p", "corpus_format=xml"],
     "step prepare-corpus (bert prepare-corpus): --corpus_format: Input should be 'auto', 'wiki', 'jsonl', 'text' "
     "or 'bert' (got 'xml')"),
    (["-p", "corpus_uri=gs://b/web.jsonl", "-p", "corpus_text_field="],
     "step prepare-corpus (bert prepare-corpus): --text_field: String should have at least 1 character (got '')"),
    (["--phase2", "-p", "phase2_learning_rate=-1"], "step pretrain-phase2 (bert pretrain): --learning_rate: "
                                                    "Input should be greater than 0 (got -1.0) (--learning_rate "
                                                    "is the pipeline parameter phase2_learning_rate)"),
])
def test_bad_parameters_are_one_line_before_any_request(kfp_server, capsys, argv, message):
    code, out, err = bp(capsys, "submit", "--host", kfp_server.url, *argv)
    assert code == 2
    assert err.startswith("bert-pipeline: error: ") and message in err and err.count("\n") == 1
    assert kfp_server.state.requests == []


def test_run_checks_every_stage_before_the_first_step(capsys, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("num_train_steps: 1000\nfinetune_optimizer_type: adamx\n")
    code, out, err = bp(capsys, "run", "--config", str(config), "--output-dir", str(tmp_path / "runs"))
    assert code == 2 and out == ""
    assert err == ("bert-pipeline: error: step finetune (bert finetune): --optimizer_type: Input should be 'adam', "
                   "'lamb', 'nadam' or 'nlamb' (got 'adamx') (--optimizer_type is the pipeline parameter "
                   "finetune_optimizer_type)\n")
    assert not (tmp_path / "runs").exists()  # no step ran


def test_bad_config_file(capsys, tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"launcher": "local", "learning_rte": 1}))
    code, _, err = bp(capsys, "run", "--config", str(config))
    assert code == 2 and f"{config}: unknown pipeline parameter 'learning_rte'" in err
    config.write_text("{not json")
    code, _, err = bp(capsys, "run", "--config", str(config))
    assert code == 2 and f"{config}: not valid JSON" in err
    code, _, err = bp(capsys, "run", "--config", str(tmp_path / "none.yaml"))
    assert code == 2 and "none.yaml: no such file" in err


def test_unreachable_server_is_one_line(capsys):
    code, _, err = bp(capsys, "list", "--host", "http://127.0.0.1:9")
    assert code == 2 and err.startswith("bert-pipeline: error: ")
    assert "cannot reach the KFP server at http://127.0.0.1:9 (NewConnectionError" in err
    assert err.count("\n") == 1


def test_schedule_with_kfp_cron_and_interval(kfp_server, capsys):
    code, out, err = bp(capsys, "schedule", "--host", kfp_server.url, "--cron", "0 0 3 * * MON-FRI",
                        "-p", "num_train_steps=1000", "-p", "registry_uri=s3://models/registry")
    assert code == 0, err
    assert kfp_server.state.errors == []
    (job,) = kfp_server.state.recurring_runs.values()
    assert job.trigger.cron_schedule.cron == "0 0 3 * * MON-FRI" and job.trigger.periodic_schedule is None
    assert job.mode == "ENABLE" and job.no_catchup is True and int(job.max_concurrency) == 1
    assert job.runtime_config.parameters == {"num_train_steps": 1000, "registry_uri": "s3://models/registry"}
    assert "cron '0 0 3 * * MON-FRI'" in out

    code, out, err = bp(capsys, "schedule", "--host", kfp_server.url, "--interval", "1d12h", "--name", "every-36h",
                        "-p", "registry_uri=")
    assert code == 0, err
    job = [j for j in kfp_server.state.recurring_runs.values() if j.display_name == "every-36h"][0]
    assert int(job.trigger.periodic_schedule.interval_second) == 36 * 3600

    code, out, _ = bp(capsys, "list", "--host", kfp_server.url, "--recurring")
    assert code == 0 and "every 129600 s" in out and "0 0 3 * * MON-FRI" in out


def test_schedule_keys_the_data_cache_on_the_corpus_snapshot(kfp_server, capsys):
    """A recurring run on a grown corpus: KFP's cache key is a step's inputs, and the corpus step's inputs
    include the corpus snapshot (sizes + generations / hashes) that the never-cached resolve-start step
    computes, so a changed corpus misses the cache of every data step while an unchanged one reuses it.
    --no-cache turns every step's cache off (in the uploaded version itself: kfp 2.13's
    create_recurring_run(enable_caching=...) does not rewrite an uploaded version)."""
    code, out, err = bp(capsys, "schedule", "--host", kfp_server.url, "--interval", "24h", "--phase2",
                        "-p", "registry_uri=gs://models/registry")
    assert code == 0, err
    assert kfp_server.state.errors == []
    (job,) = kfp_server.state.recurring_runs.values()
    version = job.pipeline_version_reference.pipeline_version_id
    caching = _tasks_caching(kfp_server, version)
    assert {k for k, v in caching.items() if v} == {"prepare-corpus", "learn-vocab", "create-data", "create-data-2"}
    assert caching["resolve-start"] is False and caching["publish"] is False
    assert "data steps cached on the corpus snapshot" in out and "publishing to gs://models/registry" in out
    code, out, err = bp(capsys, "schedule", "--host", kfp_server.url, "--interval", "24h", "--no-cache",
                        "-p", "registry_uri=gs://models/registry", "--name", "uncached")
    assert code == 0, err
    job = [j for j in kfp_server.state.recurring_runs.values() if j.display_name == "uncached"][0]
    assert not any(_tasks_caching(kfp_server, job.pipeline_version_reference.pipeline_version_id).values())
    assert "no step reusing a cached result" in out


def test_schedule_needs_a_registry_in_object_storage(kfp_server, capsys):
    code, _, err = bp(capsys, "schedule", "--host", kfp_server.url, "--interval", "24h")
    assert code == 2 and "registry_uri=runs/registry: a scheduled run's registry must be object storage" in err
    assert kfp_server.state.requests == []
    code, out, err = bp(capsys, "schedule", "--host", kfp_server.url, "--interval", "24h", "-p", "registry_uri=")
    assert code == 0 and "no registry" in out, err


def test_schedule_explains_kubernetes_five_field_cron(kfp_server, capsys):
    code, _, err = bp(capsys, "schedule", "--host", kfp_server.url, "--cron", "30 2 * * *")
    assert code == 2
    assert "has 5 fields" in err and "seconds first" in err and "write '0 30 2 * * *'" in err
    assert kfp_server.state.requests == []
    code, _, err = bp(capsys, "schedule", "--host", kfp_server.url, "--cron", "0 0 3 * * *", "--interval", "1h")
    assert code == 2 and "exactly one of --cron" in err


@pytest.mark.parametrize("expr, problem", [
    ("0 0 24 * * *", "hour field '24': 24 is outside 0-23"),
    ("0 61 * * * *", "minute field '61'"),
    ("0 0 0 ? * ?", None),
    ("*/15 * * * * *", None),
    ("0 0 12 1-15 JAN,JUL SUN", None),
    ("0 0 12 15-1 * *", "runs backwards"),
    ("0 0 12 * * 7", "7 is outside 0-6"),
    ("0 0 ? * * *", "hour field '?'"),
    ("0 0 12 * * * 2026", "expected 6 fields"),
    ("@daily", None),
    ("@every 1h", "use --interval"),
])
def test_validate_cron(expr, problem):
    if problem is None:
        assert cli.validate_cron(expr) == " ".join(expr.split())
    else:
        with pytest.raises(cli.UserError, match=problem.replace("?", r"\?").replace("*", r"\*")):
            cli.validate_cron(expr)


@pytest.mark.parametrize("text, seconds", [("24h", 86400), ("90m", 5400), ("1h30m", 5400), ("2d", 172800),
                                           ("3600", 3600), ("45s", 45)])
def test_parse_interval(text, seconds):
    assert cli.parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "0h", "1w", "h", "-5m", "1.5h"])
def test_parse_interval_rejects(text):
    with pytest.raises(cli.UserError, match="--interval"):
        cli.parse_interval(text)


def test_the_endpoint_from_kfp_env_and_tls(tmp_path, monkeypatch, capsys):
    """No --host: kfp's own KF_PIPELINES_ENDPOINT. An HTTPS server with a private CA: refused (one line
    with the way out), then accepted with --ssl-ca-cert, or with --no-verify-ssl."""
    cert, key = tls_files(str(tmp_path))
    server = start_server(tls=(cert, key))
    try:
        monkeypatch.setenv("KF_PIPELINES_ENDPOINT", server.url)
        code, _, err = bp(capsys, "submit", "--run-name", "refused")
        assert code == 2 and err.count("\n") == 1
        assert f"connect: cannot reach the KFP server at {server.url} (SSLError" in err
        assert "CERTIFICATE_VERIFY_FAILED" in err
        assert "--ssl-ca-cert FILE" in err and server.state.requests == []

        code, out, err = bp(capsys, "submit", "--run-name", "verified", "--ssl-ca-cert", cert)
        assert code == 0, err
        (run,) = server.state.runs.values()
        assert run.display_name == "verified"
        assert f"status: bert-pipeline status {run.run_id}" in out  # no --host to repeat

        code, out, err = bp(capsys, "list", "--no-verify-ssl")
        assert code == 0, err
        assert "verified" in out and server.state.errors == []

        code, _, err = bp(capsys, "list", "--ssl-ca-cert", str(tmp_path / "none.pem"))
        assert code == 2 and "--ssl-ca-cert" in err and "none.pem: no such file" in err
    finally:
        server.stop()


def test_list_and_status(kfp_server, capsys):
    assert bp(capsys, "submit", "--host", kfp_server.url, "--run-name", "first")[0] == 0
    assert bp(capsys, "submit", "--host", kfp_server.url, "--run-name", "second", "--experiment", "other")[0] == 0
    code, out, _ = bp(capsys, "list", "--host", kfp_server.url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["run", "name", "state"]
    assert [line.split()[1] for line in lines[2:]] == ["second", "first"]  # newest first
    code, out, _ = bp(capsys, "list", "--host", kfp_server.url, "--experiment", "other")
    assert code == 0 and "second" in out and "first" not in out

    run = next(r for r in kfp_server.state.runs.values() if r.display_name == "first")
    code, out, _ = bp(capsys, "status", "--host", kfp_server.url, run.run_id)
    assert code == 0 and f"run {run.run_id}  first" in out and "state     PENDING" in out
    run.state = "FAILED"
    assert bp(capsys, "status", "--host", kfp_server.url, run.run_id)[0] == 1
    code, _, err = bp(capsys, "status", "--host", kfp_server.url, "no-such-run")
    assert code == 2 and "run no-such-run: the KFP server answered 404" in err


# --------------------------------------------------------------------------------------------------
# artifacts ls / show over bert_core.artifacts, on gs:// (fake GCS server) and locally
# --------------------------------------------------------------------------------------------------
def test_artifacts_ls_and_show_on_gcs(gcs_prefix, capsys):
    from bert_core import storage

    manifest = {"tool": "bert create-data", "totals": {"instances": 1234, "tokens": 99},
                "shards": [{"shard": 0, "instances": 600}, {"shard": 1, "instances": 634}]}
    storage.write_json(f"{gcs_prefix}/create-data/data/data_manifest.json", manifest)
    storage.write_bytes(f"{gcs_prefix}/create-data/data/train-00000-of-00002.tfrecord", b"x" * 2048)
    storage.write_json(f"{gcs_prefix}/evaluate/metrics/metrics.json", {"accuracy": 0.75})

    code, out, err = bp(capsys, "artifacts", "ls", gcs_prefix)
    assert code == 0, err
    assert "create-data/data/train-00000-of-00002.tfrecord  2.0 KiB" in out
    assert "evaluate/metrics/metrics.json" in out and out.rstrip().endswith("3 files, " + out.rstrip().split(", ")[-1])

    code, out, _ = bp(capsys, "artifacts", "show", f"{gcs_prefix}/create-data/data")
    assert code == 0
    assert "data_manifest.json" in out and "totals.instances" in out and "1234" in out
    assert "shards (2 rows)" in out

    code, out, _ = bp(capsys, "artifacts", "show", f"{gcs_prefix}/evaluate/metrics/metrics.json")
    assert code == 0 and "accuracy" in out and "0.75" in out

    code, _, err = bp(capsys, "artifacts", "ls", f"{gcs_prefix}/nothing-here")
    assert code == 2 and err.startswith("bert-pipeline: error: ") and "no artifacts there" in err


def test_artifacts_download_a_prefix(gcs_prefix, capsys, tmp_path):
    """`artifacts download PREFIX DIR` (TensorBoard's summaries off object storage, docs/pipeline.md):
    every object below the prefix, byte for byte, paths kept; not a sibling that shares the name's start."""
    from bert_core import storage

    files = {"train/events.out.tfevents.1.v2": b"\x00" * 3000, "train/history.jsonl": b'{"step": 1}\n',
             "train/sub/more.v2": b"more", "train2/other": b"not this"}
    for rel, data in files.items():
        storage.write_bytes(f"{gcs_prefix}/model/{rel}", data)
    code, out, err = bp(capsys, "artifacts", "download", f"{gcs_prefix}/model/train/", str(tmp_path / "tb"))
    assert code == 0, err
    assert out.strip() == f"downloaded 3 file(s) to {tmp_path / 'tb'}"
    got = {p.relative_to(tmp_path / "tb").as_posix(): p.read_bytes() for p in (tmp_path / "tb").rglob("*") if p.is_file()}
    assert got == {rel[len("train/"):]: data for rel, data in files.items() if rel.startswith("train/")}

    code, _, err = bp(capsys, "artifacts", "download", f"{gcs_prefix}/model/nothing", str(tmp_path / "x"))
    assert code == 2 and "nothing to download" in err and not (tmp_path / "x").exists()
    code, _, err = bp(capsys, "artifacts", "download", f"{gcs_prefix}/model/train")
    assert code == 2 and "give PREFIX DIR" in err


def test_artifacts_compare_on_gcs(gcs_prefix, capsys, tmp_path):
    """Two runs in object storage: the parameters that differ, the headline metrics side by side, and
    the page with the loss curves of both runs overlaid."""
    from bert_core import layout, storage

    for run, lr, losses, accuracy in (("run-a", 1e-4, [7.0, 6.0], 0.7), ("run-b", 3e-4, [7.0, 5.0], 0.8)):
        base = f"{gcs_prefix}/{run}"
        storage.write_json(f"{base}/{layout.RUN_RECORD}", {"pipeline": "bert-pipeline", "parameters": {
            "learning_rate": lr, "num_train_steps": 20, "bert_model": "bert-tiny"}})
        storage.write_json(f"{base}/pretrain/model/{layout.PRETRAIN_METRICS}",
                           {"global_step": 20, "train_loss": losses[-1], "world_size": 1})
        storage.write_text(layout.train_history_path(f"{base}/pretrain/model"),
                           "".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in zip((10, 20), losses)))
        storage.write_json(f"{base}/evaluate/metrics/{layout.EVAL_METRICS}", {"accuracy": accuracy})
        storage.write_json(f"{base}/evaluate/metrics/{layout.EVAL_DETAILS}",
                           {"kind": "classification", "labels": ["0", "1"], "confusion_matrix": [[1, 0], [0, 1]]})

    code, out, err = bp(capsys, "artifacts", "compare", f"{gcs_prefix}/run-a", f"{gcs_prefix}/run-b",
                        "--html", str(tmp_path / "compare.html"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "1 of 3 parameters differ:"
    assert lines[1].split() == ["parameter", "run-a", "run-b"] and lines[3].split() == ["learning_rate", "0.0001", "0.0003"]
    assert ["pretrain.train_loss", "6", "5"] in [line.split() for line in lines]
    assert ["evaluate.accuracy", "0.7", "0.8"] in [line.split() for line in lines]
    html = (tmp_path / "compare.html").read_text()
    assert html.count('<figure class="plot"') == 1 and 'data-title="pretrain: training loss"' in html
    assert html.count('<tr class="differs">') == 1

    code, _, err = bp(capsys, "artifacts", "compare", f"{gcs_prefix}/run-a")
    assert code == 2 and "compare: give two runs or more" in err
    code, _, err = bp(capsys, "artifacts", "show", f"{gcs_prefix}/run-a", f"{gcs_prefix}/run-b")
    assert code == 2 and "artifacts show: give one PATH" in err


def test_run_names_the_failed_step_and_its_error(tmp_path, capsys):
    code, out, err = bp(capsys, "run", "--output-dir", str(tmp_path), "-p", f"corpus_uri={tmp_path}/missing.txt")
    assert code == 2
    # The first step takes the corpus's snapshot (the data steps' cache key): it finds the corpus missing.
    assert "[1/8] resolve-start ..." in out and "resolve-start: failure" in out
    assert err.startswith("bert-pipeline: error: Pipeline 'bert-pipeline' finished with status FAILURE. "
                          "Inner task failed: 'resolve-start'.")
    assert f"{tmp_path}/missing.txt: no such file" in err and f"(log: {tmp_path}/pipeline.log)" in err
    assert err.count("\n") == 1


def test_run_renders_kfp_task_lines_and_the_stages_events(tmp_path):
    """Per task, kfp.local's own start/finish lines; under them our stages' events, never their log lines."""
    import io

    from bert_core import events

    events_file = tmp_path / "events.jsonl"
    log, terminal = io.StringIO(), io.StringIO()
    progress = cli.StageProgress(log, terminal, total=2, events_path=str(events_file))
    progress.write("\x1b[32mINFO\x1b[0m - Executing task \x1b[96m'pretrain'\x1b[0m\n")
    progress.write("step 2/4  loss 9.9  lr 1e-3  5.0 seq/s\n")  # a human line: only in the log
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(events.ENV, str(events_file))
        events.emit("step", "pretrain", step=2, total=4, loss=3.25, sequences_per_second=120.0, eta_seconds=61.0)
        events.emit("wrote", "pretrain", path="/x/model/pretrain_metrics.json")
        events.emit("error", "pretrain", message="first problem")
        events.emit("error", "pretrain", message="a rank's echo of it")
    progress.write("INFO - Task 'pretrain' finished with status SUCCESS\n")
    lines = terminal.getvalue().splitlines()
    assert lines[0] == "[1/2] pretrain ..."
    assert lines[1] == "      pretrain: step 2/4  loss 3.2500  120.0 seq/s  ETA 0:01:01"
    assert lines[2] == "      pretrain: wrote /x/model/pretrain_metrics.json"
    assert lines[3].startswith("      pretrain: success in ") and len(lines) == 4
    assert progress.error == "first problem"
    assert "step 2/4  loss 9.9" in log.getvalue()


def test_one_boolean_spelling_for_both_command_lines():
    from bert_core.cli import build_parser

    for text, value in (("T", True), ("yes", True), ("on", True), ("0", False), ("f", False), ("No", False)):
        assert cli.coerce("x", text, "Boolean", "--param") is value
        assert build_parser().parse_args(["pretrain", "--output_dir=o", f"--do_train={text}"]).do_train is value
    with pytest.raises(Exception, match="expected true or false, got 'maybe'"):
        cli.coerce("x", "maybe", "Boolean", "--param")


@pytest.mark.slow
def test_sigkill_of_run_ends_its_steps_horovodrun_and_ranks(tmp_path):
    """A killed `bert-pipeline run` leaves nothing running: not the step, horovodrun or the 2 ranks."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.processes import descendants, still_running

    cmd = [sys.executable, "-m", "pipelines.cli", "run", "--ci", "-p", "dupe_factor=1", "--output-dir",
           str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, ranks = time.time() + 900, {}
    try:
        while len(ranks) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
            children = descendants(proc.pid)
            ranks = {pid: c for pid, c in children.items()
                     if "-m bert_core.cli pretrain" in c and "horovodrun" not in c and not c.startswith("/bin/sh")}
        assert len(ranks) == 2, f"the pretraining ranks never started: {proc.poll()}"
        assert any("horovodrun" in c for c in children.values()), children
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # horovodrun ends its ranks with SIGTERM, then SIGKILL after its 5 s grace
    assert still_running(children, seconds=15) == {}
