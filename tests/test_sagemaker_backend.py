"""The sagemaker and local_container backends through the real SageMaker SDK v3 (sagemaker-core's resources and
shapes) and boto3, against moto's SageMaker, S3 and CloudWatch Logs APIs on 127.0.0.1. The requests the SDK sends are
captured from botocore's event hooks. Where moto lacks an API — ListTrainingJobsForHyperParameterTuningJob, StopTrainingJob,
InvokeEndpoint (moto answers a placeholder) — a before-call hook answers instead (botocore's own
short-circuit, as its Stubber uses), and the test says so."""

import io
import json
import sys
import tarfile
import time
from datetime import datetime
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
from conftest import REPO
from dogbreed.backends.containers import ContainerSetupError
from dogbreed.backends.errors import EndpointGone, EndpointRefused, JobFailed
from dogbreed.backends.registry import get_backend
from dogbreed.backends.sagemaker import CloudCostNotConfirmed, JobLogLines
from dogbreed.backends.sagemaker_jobs import extract_output_data, job_hyperparameters
from dogbreed.data.store import S3Store, StoreError
from dogbreed.runtime.run_plan import PlanRefused
from dogbreed.serving import evaluation
from dogbreed.tuning.sagemaker_tuner import warm_start_parents

SETTINGS = {
    "role": "arn:aws:iam::123456789012:role/SageMakerRole",
    "instance_type": "ml.g4dn.xlarge",
    "instance_count": 1,
    "volume_size_gb": 50,
    "max_run_hours": 2,
    "framework_version": "2.8",
    "py_version": "py312",
    "inference_framework_version": "2.6",
    "inference_instance_type": "ml.m5.large",
    "logs": "None",
    "poll_seconds": 0.2,
    "tags": {"project": "dog-breed"},
    "prices_per_hour": {"ml.g4dn.xlarge": 0.736, "ml.m5.large": 0.115},
    "metric_definitions": [
        {"Name": "valid_accuracy", "Regex": r"valid_accuracy=([0-9.]+)"},
        {"Name": "valid_loss", "Regex": r"valid_loss=([0-9.eE+-]+)"},
    ],
}
SPEC = {
    "objective": {"metric": "valid_accuracy", "regex": r"valid_accuracy=([0-9.]+)", "type": "Maximize"},
    "strategy": "Bayesian",
    "early_stopping": "Auto",
    "max_jobs": 4,
    "max_parallel_jobs": 2,
    "seed": 0,
    "parameters": {
        "lr": {"type": "continuous", "min": 0.001, "max": 0.1, "scaling": "Logarithmic"},
        "batch_size": {"type": "categorical", "values": [32, 64]},
    },
}


@pytest.fixture
def aws(moto_server, bucket, monkeypatch):
    """moto for S3, SageMaker and the runtime (SDK telemetry is off for every test: conftest)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)  # every AWS service the SDK touches: moto
    return bucket


def backend_for(bucket, captured, confirm=True, name="sagemaker", **overrides):
    backend = get_backend(
        name, {**SETTINGS, "output_s3_uri": f"s3://{bucket}/jobs", "confirm_cloud": confirm, **overrides}
    )
    # the requests the SDK sends, as botocore is about to serialise them
    backend.client.meta.events.register(
        "provide-client-params.sagemaker", lambda params, model, **_: captured.append((model.name, params))
    )
    return backend


def sent(captured, operation):
    return [params for name, params in captured if name == operation]


def answer(client, operation, response):
    """Answer `operation` on this client without sending it (moto lacks it)."""

    def short_circuit(**_):
        return (type("HTTP", (), {"status_code": 200, "headers": {}})(), response)

    client.meta.events.register(f"before-call.{client.meta.service_model.endpoint_prefix}.{operation}", short_circuit)


def put_job_outputs(bucket, job_name, epochs=2):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=f"jobs/{job_name}/output/model.tar.gz", Body=b"model")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        lines = "".join(
            json.dumps({"epoch": e, "valid_accuracy": 0.5 + e / 10}) + "\n" for e in range(1, epochs + 1)
        ).encode()
        info = tarfile.TarInfo("metrics.jsonl")
        info.size = len(lines)
        archive.addfile(info, io.BytesIO(lines))
    s3.put_object(Bucket=bucket, Key=f"jobs/{job_name}/output/output.tar.gz", Body=buffer.getvalue())


def answer_one_completed_trial(backend):
    """moto lacks ListTrainingJobsForHyperParameterTuningJob: every tuning job lists one completed trial."""
    answer(
        backend.client,
        "ListTrainingJobsForHyperParameterTuningJob",
        {
            "TrainingJobSummaries": [
                {
                    "TrainingJobName": "t-1",
                    "TrainingJobArn": "arn",
                    "CreationTime": 0,
                    "TrainingJobStatus": "Completed",
                    "TunedHyperParameters": {"lr": "0.01", "batch_size": '"32"'},
                    "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "valid_accuracy", "Value": 0.5},
                }
            ]
        },
    )


CHANNELS = lambda bucket: {"train": f"s3://{bucket}/data/train", "valid": f"s3://{bucket}/data/valid"}


def test_no_cloud_work_without_confirmation(aws, tmp_path, capsys):
    captured = []
    backend = backend_for(aws, captured, confirm=False)
    with pytest.raises(CloudCostNotConfirmed, match="--config confirm_cloud=true"):
        backend.train("train-x", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")
    assert "1 × ml.g4dn.xlarge × up to 2 h × $0.736/h = at most $1.47" in capsys.readouterr().out
    assert sent(captured, "CreateTrainingJob") == []


def test_training_job_request_and_artifacts(aws, tmp_path):
    captured = []
    backend = backend_for(aws, captured, use_spot=True, max_wait_hours=3)
    put_job_outputs(aws, "train-abc")
    result = backend.train(
        "train-abc", {"lr": 0.003, "batch_size": 32, "debug": True}, CHANNELS(aws), tmp_path, REPO / "scripts"
    )
    (request,) = sent(captured, "CreateTrainingJob")
    spec = request["AlgorithmSpecification"]
    assert spec["TrainingImage"].endswith("/pytorch-training:2.8-gpu-py312")
    assert spec["MetricDefinitions"] == SETTINGS["metric_definitions"]
    assert request["ResourceConfig"] == {"VolumeSizeInGB": 50, "InstanceCount": 1, "InstanceType": "ml.g4dn.xlarge"}
    assert (
        request["HyperParameters"]["lr"] == "0.003" and request["HyperParameters"]["sagemaker_program"] == '"train.py"'
    )
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train", "valid"]
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{aws}/data/train"
    assert (
        request["EnableManagedSpotTraining"] is True
        and request["StoppingCondition"]["MaxWaitTimeInSeconds"] == 3 * 3600
    )
    # its own checkpoint prefix, ending in "/" (no sibling job-10 matches job-1); its code beside its outputs
    assert request["CheckpointConfig"]["S3Uri"] == f"s3://{aws}/jobs/checkpoints/train-abc/"
    assert (
        request["HyperParameters"]["sagemaker_submit_directory"]
        == f'"s3://{aws}/jobs/train-abc/source/sourcedir.tar.gz"'
    )
    assert boto3.client("s3").head_object(Bucket=aws, Key="jobs/train-abc/source/sourcedir.tar.gz")
    assert request["Tags"] == [{"Key": "project", "Value": "dog-breed"}]
    assert "DebugHookConfig" not in request and request["ProfilerConfig"] == {
        "DisableProfiler": True
    }  # ours runs in train.py
    assert result["metrics"] == [{"epoch": 1, "valid_accuracy": 0.6}, {"epoch": 2, "valid_accuracy": 0.7}]
    # recorded as train.py took them (model.json), as on the other backends: typed, no toolkit keys
    assert result["hyperparameters"] == {"lr": 0.003, "batch_size": 32, "debug": True}
    assert job_hyperparameters({"arch": "resnet18", "lr": "0.1", "sagemaker_program": '"train.py"'}) == {
        "arch": "resnet18",  # set by hand, not JSON: kept as its text
        "lr": 0.1,
    }
    assert Path(result["model_uri"][len("file://") :]).read_bytes() == b"model"

    again = backend.train("train-abc", {"lr": 0.003}, CHANNELS(aws), tmp_path, REPO / "scripts")  # a rerun
    assert len(sent(captured, "CreateTrainingJob")) == 1 and again["job_name"] == "train-abc"


def test_the_backend_sends_no_telemetry_itself(aws, tmp_path, monkeypatch):
    """The SDK's telemetry (an sts:GetCallerIdentity and a request to AWS for each job): the backend's requests send
    none even where no config file says to keep it off (conftest.py gives the SDK one)."""
    import sagemaker.core.telemetry.telemetry_logging as telemetry

    monkeypatch.delenv("SAGEMAKER_USER_CONFIG_OVERRIDE")
    reported = []
    monkeypatch.setattr(telemetry, "_send_telemetry_request", lambda *args, **kwargs: reported.append(args))
    backend = backend_for(aws, [])
    put_job_outputs(aws, "train-untold")
    backend.train("train-untold", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")
    assert reported == []


def test_sagemakers_own_profiler_can_be_switched_on(aws, tmp_path):
    captured = []
    backend = backend_for(aws, captured, sagemaker_profiler=True)
    put_job_outputs(aws, "train-prof")
    backend.train("train-prof", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")
    (request,) = sent(captured, "CreateTrainingJob")
    assert request["ProfilerConfig"]["ProfilingIntervalInMilliseconds"] == 500
    assert next(r["RuleConfigurationName"] for r in request["ProfilerRuleConfigurations"]).startswith("ProfilerReport")


def test_ctrl_c_stops_the_job_it_launched(aws, tmp_path, monkeypatch):
    captured = []
    backend = backend_for(aws, captured, logs="All")  # interrupted while the SDK streams its logs
    answer(backend.client, "StopTrainingJob", {})  # moto: not implemented
    stops = []
    backend.client.meta.events.register(
        "provide-client-params.sagemaker.StopTrainingJob", lambda params, **_: stops.append(params)
    )

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(JobLogLines, "print_new", interrupted)
    with pytest.raises(KeyboardInterrupt):
        backend.train("train-stop", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")
    assert stops == [{"TrainingJobName": "train-stop"}]


def test_tuning_job_request_trials_and_warm_start(aws, tmp_path):
    captured = []
    backend = backend_for(aws, captured, use_spot=True)
    summaries = [
        {
            "TrainingJobName": f"tune-abc-00{i}-x",
            "TrainingJobArn": "arn",
            "CreationTime": i,
            "TrainingJobStatus": status,
            "TunedHyperParameters": {"lr": str(lr), "batch_size": '"64"'},
            **(
                {"FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "valid_accuracy", "Value": value}}
                if value
                else {}
            ),
        }
        for i, (status, lr, value) in enumerate(
            [("Completed", 0.003, 0.71), ("Completed", 0.05, 0.42), ("Failed", 0.09, None)]
        )
    ]
    answer(
        backend.client, "ListTrainingJobsForHyperParameterTuningJob", {"TrainingJobSummaries": summaries}
    )  # moto: missing
    rows, best = backend.tune(
        SPEC, {"epochs": 3, "debug": False}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-abc", None
    )
    (request,) = sent(captured, "CreateHyperParameterTuningJob")
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian" and config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "valid_accuracy"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2}
    assert config["RandomSeed"] == SPEC["seed"]  # tuning.seed reaches the tuner
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [
        {"Name": "lr", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
    ]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "batch_size", "Values": ['"32"', '"64"']}]
    definition = request["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == SETTINGS["metric_definitions"]
    assert definition["StaticHyperParameters"]["epochs"] == "3"
    # the trials share the tuning job's own checkpoint prefix (train.py keeps each under its job's name)
    assert definition["CheckpointConfig"]["S3Uri"] == f"s3://{aws}/jobs/checkpoints/tune-abc/"
    assert definition["StaticHyperParameters"]["sagemaker_submit_directory"].startswith(f'"s3://{aws}/jobs/tune-abc')
    assert [r["status"] for r in rows] == ["Completed", "Completed", "Failed"]
    assert best["hyperparameters"] == {"lr": 0.003, "batch_size": 64} and best["objective"]["value"] == 0.71


def test_deploy_invoke_and_teardown(aws, tmp_path, tiny_channels):
    captured = []
    backend = backend_for(aws, captured, endpoint="instance")
    model_tar = tmp_path / "model.tar.gz"
    with tarfile.open(model_tar, "w:gz") as archive:
        archive.add(REPO / "scripts/inference.py", arcname="code/inference.py")
        archive.add(REPO / "scripts/classifier.py", arcname="code/classifier.py")
    endpoint = backend.deploy(model_tar, "dogbreed-test", tmp_path / "state")
    (model,) = sent(captured, "CreateModel")
    assert model["PrimaryContainer"]["Image"].endswith("/pytorch-inference:2.6-cpu-py312")
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    (config,) = sent(captured, "CreateEndpointConfig")
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.large"
    assert sent(captured, "CreateEndpoint")[0]["EndpointName"] == "dogbreed-test"
    assert backend.healthy(endpoint)

    runtime = backend.runtime

    def too_large(**_):  # what the runtime answers a body over its limit
        raise runtime.exceptions.ValidationError(
            {"Error": {"Code": "ValidationError", "Message": "Request payload is too large"}}, "InvokeEndpoint"
        )

    invoke_event = f"before-call.{runtime.meta.service_model.endpoint_prefix}.InvokeEndpoint"
    runtime.meta.events.register(invoke_event, too_large, unique_id="too-large")
    with pytest.raises(EndpointRefused, match=r"refused a request of 7,000,000 bytes .*too large; .*6,291,456 bytes"):
        backend.invoke(endpoint, b"0" * 7_000_000, "application/json")
    runtime.meta.events.unregister(invoke_event, unique_id="too-large")
    body = json.dumps({"predictions": [[{"index": 0, "breed": "Red_Circle", "probability": 0.9}]]}).encode()

    # throttled, then the model not ready yet: evaluate sends it again (with backoff) until it is answered
    error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
    failures = [
        botocore.exceptions.ClientError(error, "InvokeEndpoint"),
        runtime.exceptions.ModelNotReadyException(
            {"Error": {"Code": "ModelNotReadyException", "Message": "Model is not ready"}}, "InvokeEndpoint"
        ),
    ]

    def flaky(**_):
        if failures:
            raise failures.pop(0)
        return (type("HTTP", (), {"status_code": 200, "headers": {}})(), {"Body": io.BytesIO(body)})

    runtime.meta.events.register(invoke_event, flaky, unique_id="flaky")
    assert evaluation.send(backend, endpoint, b"{}", "application/json", retry_for_s=60) == body
    assert failures == []
    runtime.meta.events.unregister(invoke_event, unique_id="flaky")

    def deleted(**_):  # what the runtime answers for an endpoint deleted meanwhile
        raise runtime.exceptions.ValidationError(
            {"Error": {"Code": "ValidationError", "Message": "Endpoint dogbreed-test of account 1 not found."}},
            "InvokeEndpoint",
        )

    runtime.meta.events.register(invoke_event, deleted, unique_id="deleted")
    with pytest.raises(EndpointGone, match=r"^endpoint dogbreed-test no longer exists: run the same command again"):
        evaluation.send(backend, endpoint, b"{}", "application/json", retry_for_s=60)
    runtime.meta.events.unregister(invoke_event, unique_id="deleted")
    answer(
        runtime, "InvokeEndpoint", {"Body": io.BytesIO(body), "ContentType": "application/json"}
    )  # moto: placeholder
    assert json.loads(backend.invoke(endpoint, b"{}", "application/json"))["predictions"][0][0]["breed"] == "Red_Circle"

    deleted = backend.teardown(tmp_path / "state")
    assert [d.split()[0] for d in deleted] == ["endpoint", "endpointconfig", "model"]
    assert not backend.healthy(endpoint) and not (tmp_path / "state/state.json").exists()
    assert {name for name, _ in captured} >= {"DeleteEndpoint", "DeleteEndpointConfig", "DeleteModel"}


def test_local_container_without_an_engine_is_one_clear_error(tmp_path, monkeypatch):
    """No Docker engine: the job refuses before the SDK starts, saying how to get one (make test-container
    runs the real thing). Building the job's request, as a dry run does, needs no Docker and no AWS."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    backend = get_backend(
        "local_container",
        {"metric_definitions": SETTINGS["metric_definitions"], "output_s3_uri": f"file://{tmp_path}/jobs"},
    )
    code = f"file://{REPO}/scripts"
    request = backend.training_request("local-job", {"lr": 0.1}, {"train": f"file://{tmp_path}"}, code)
    assert request["ResourceConfig"]["InstanceType"] == "local"
    image = request["AlgorithmSpecification"]["TrainingImage"]
    assert image == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8-cpu-py312"
    assert request["HyperParameters"]["sagemaker_submit_directory"] == json.dumps(code)
    assert request["OutputDataConfig"]["S3OutputPath"] == f"file://{tmp_path}/jobs/local-job/output"  # its own
    session = backend.local_session()
    assert type(session).__name__ == "LocalSession" and session.boto_region_name == "us-east-1"  # no AWS set-up
    with pytest.raises(ContainerSetupError, match=r"needs a running Docker engine.*make container-images"):
        backend.train(
            "local-job",
            {"lr": 0.1},
            {"train": f"file://{tmp_path}", "valid": f"file://{tmp_path}"},
            tmp_path / "jobs",
            REPO / "scripts",
        )
    with pytest.raises(ContainerSetupError, match="needs a running Docker engine"):
        backend.deploy(tmp_path / "model.tar.gz", "endpoint", tmp_path / "state")
    # before Optuna starts: it would record the missing engine as failed trials, and a rerun would find none left
    with pytest.raises(ContainerSetupError, match="needs a running Docker engine"):
        backend.tune(
            SPEC,
            {},
            {"train": f"file://{tmp_path}"},
            tmp_path / "jobs",
            REPO / "scripts",
            "tune-local",
            tmp_path / "study.sqlite",
        )
    assert not (tmp_path / "study.sqlite").exists()


@pytest.mark.parametrize("layout", ["sagemaker", "local_mode"])
def test_output_data_reads_the_same_from_both_archive_layouts(tmp_path, layout):
    """SageMaker's output.tar.gz holds /opt/ml/output/data's contents; local mode's holds /opt/ml/output."""
    inner = tmp_path / "packed"
    data = inner / "data" if layout == "local_mode" else inner
    (data / "profiler").mkdir(parents=True)
    (data / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (data / "profiler/steps.jsonl").write_text("{}\n")
    if layout == "local_mode":
        (inner / "success").write_text("")
    with tarfile.open(tmp_path / "output.tar.gz", "w:gz") as archive:
        for path in inner.iterdir():
            archive.add(path, arcname=path.name)
    target = tmp_path / "job/output/data"
    target.mkdir(parents=True)
    extract_output_data(tmp_path / "output.tar.gz", target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "metrics.jsonl",
        "profiler",
        "profiler/steps.jsonl",
    ]


def test_a_warm_start_with_one_trial_left_runs_one_at_a_time(aws, tmp_path):
    captured = []
    backend = backend_for(aws, captured)
    answer_one_completed_trial(backend)
    backend.tune({**SPEC, "max_jobs": 1}, {}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-one", None)
    backend.tune({**SPEC, "max_jobs": 2}, {}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-one", None)
    limits = [
        r["HyperParameterTuningJobConfig"]["ResourceLimits"] for r in sent(captured, "CreateHyperParameterTuningJob")
    ]
    # the API refuses MaxParallelTrainingJobs above MaxNumberOfTrainingJobs
    assert limits == [{"MaxNumberOfTrainingJobs": 1, "MaxParallelTrainingJobs": 1}] * 2


def test_a_failed_tuning_job_says_why(aws, tmp_path):
    captured = []
    backend = backend_for(aws, captured)
    original = backend.client.describe_hyper_parameter_tuning_job

    def failed(**kwargs):  # moto's tuning jobs complete at once
        reason = "ResourceLimitExceeded: the account-level service limit 'ml.g4dn.xlarge for training' is 0"
        return {**original(**kwargs), "HyperParameterTuningJobStatus": "Failed", "FailureReason": reason}

    backend.client.describe_hyper_parameter_tuning_job = failed
    with pytest.raises(JobFailed, match=r"tuning job tune-fail ended Failed: ResourceLimitExceeded: the account"):
        backend.tune(SPEC, {}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-fail", None)


def test_ended_trials_leave_no_checkpoints_for_the_next_ones(aws, tmp_path):
    """With spot the trials share the tuning job's checkpoint prefix, copied into every trial at its start: a trial
    that ended (completed, stopped early, failed) loses its checkpoint folder while the tuning runs; a running
    trial, a trial whose name only begins like an ended one's, and another tuning job keep theirs."""
    captured = []
    backend = backend_for(aws, captured, use_spot=True)
    s3 = boto3.client("s3")
    kept = [
        "jobs/checkpoints/tune-ck/tune-ck-003-c/checkpoint.pth",  # running
        "jobs/checkpoints/tune-ck/tune-ck-001-ab/checkpoint.pth",  # tune-ck-001-a's name and more
        "jobs/checkpoints/tune-ck-w1/tune-ck-001-a/checkpoint.pth",  # another tuning job's
    ]
    ended = [f"jobs/checkpoints/tune-ck/{trial}/checkpoint.pth" for trial in ("tune-ck-001-a", "tune-ck-002-b")]
    ended.append("jobs/checkpoints/tune-ck/tune-ck-004-d/checkpoint.pth")
    for key in kept + ended:
        s3.put_object(Bucket=aws, Key=key, Body=b"state")
    trials = [("tune-ck-001-a", "Stopped"), ("tune-ck-002-b", "Failed"), ("tune-ck-003-c", "InProgress")]
    summaries = [
        {
            "TrainingJobName": name,
            "TrainingJobArn": "arn",
            "CreationTime": i,
            "TrainingJobStatus": status,
            "TunedHyperParameters": {"lr": "0.01", "batch_size": '"32"'},
            **(
                {"FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "valid_accuracy", "Value": 0.5}}
                if status == "Completed"
                else {}
            ),
        }
        for i, (name, status) in enumerate([*trials, ("tune-ck-004-d", "Completed")])
    ]
    answer(backend.client, "ListTrainingJobsForHyperParameterTuningJob", {"TrainingJobSummaries": summaries})
    backend.tune(SPEC, {}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-ck", None)
    left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=aws, Prefix="jobs/checkpoints/").get("Contents", []))
    assert left == sorted(kept)
    with pytest.raises(StoreError, match="refusing to remove"):
        S3Store().remove(f"s3://{aws}/")


def test_a_denied_checkpoint_removal_is_said_once_and_the_tuning_goes_on(aws, tmp_path, monkeypatch, capsys):
    """S3 answers a DeleteObjects it may not carry out with 200 and the keys it kept (each AccessDenied): the clean-up
    says so once, does not ask again, and the tuning ends as usual with every checkpoint where it was."""
    captured, deletes = [], []
    backend = backend_for(aws, captured, use_spot=True)
    s3 = boto3.client("s3")
    checkpoints = [f"jobs/checkpoints/tune-deny/tune-deny-00{i}-x/checkpoint.pth" for i in (1, 2)]
    for key in checkpoints:
        s3.put_object(Bucket=aws, Key=key, Body=b"state")

    def denied(**_):  # each key it was asked to delete, kept
        kept = [{"Key": o["Key"], "Code": "AccessDenied", "Message": "Access Denied"} for o in deletes[-1]]
        return (type("HTTP", (), {"status_code": 200, "headers": {}})(), {"Errors": kept})

    made = S3Store.__init__

    def with_denial(self, *args, **kwargs):
        made(self, *args, **kwargs)
        events = self.client.meta.events
        events.register(
            "provide-client-params.s3.DeleteObjects", lambda params, **_: deletes.append(params["Delete"]["Objects"])
        )
        events.register("before-call.s3.DeleteObjects", denied)

    monkeypatch.setattr(S3Store, "__init__", with_denial)
    summaries = [
        {
            "TrainingJobName": f"tune-deny-00{i}-x",
            "TrainingJobArn": "arn",
            "CreationTime": i,
            "TrainingJobStatus": "Completed",
            "TunedHyperParameters": {"lr": "0.01", "batch_size": '"32"'},
            "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "valid_accuracy", "Value": 0.5 + i / 10},
        }
        for i in (1, 2)
    ]
    answer(backend.client, "ListTrainingJobsForHyperParameterTuningJob", {"TrainingJobSummaries": summaries})
    best = backend.tune(SPEC, {}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-deny", None)[1]
    assert best["job_name"] == "tune-deny-002-x"
    assert len(deletes) == 1  # denied once: not asked again
    said = capsys.readouterr().out
    assert said.count("removing them was denied") == 1 and "access to s3://" in said
    left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=aws, Prefix="jobs/checkpoints/")["Contents"])
    assert left == checkpoints


@pytest.mark.parametrize("logs", ["None", "Rules"])
def test_logs_none_streams_no_log_and_says_the_jobs_status(aws, tmp_path, monkeypatch, capsys, logs):
    """logs None and Rules read no log line: the job's status (and its rules') only."""
    captured = []
    backend = backend_for(aws, captured, logs=logs)
    monkeypatch.setattr(JobLogLines, "print_new", lambda *a, **k: pytest.fail("the job's logs were streamed"))
    put_job_outputs(aws, "train-quiet")
    backend.train("train-quiet", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")
    assert "training job train-quiet: Completed" in capsys.readouterr().out


def test_logs_all_streams_the_jobs_logs(aws, tmp_path, capsys):
    """Every instance's stream of the job's CloudWatch log group, each line once; another job's stream not."""
    backend = backend_for(aws, [], logs="All")
    logs = backend.boto_session.client("logs")
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    lines = {"train-loud/algo-1-1": ["epoch=1 valid_accuracy=0.5"], "train-loud/algo-2-1": ["from the second"]}
    lines["train-loud-2/algo-1-1"] = ["another job's"]
    for stream, messages in lines.items():
        logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)
        logs.put_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs",
            logStreamName=stream,
            logEvents=[{"timestamp": int(time.time() * 1000), "message": m} for m in messages],  # moto drops old ones
        )
    put_job_outputs(aws, "train-loud")
    backend.train("train-loud", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")
    out = capsys.readouterr().out
    assert out.count("epoch=1 valid_accuracy=0.5\n") == 1 and out.count("from the second\n") == 1
    assert "another job's" not in out


def test_a_grown_tuning_spec_warm_starts(aws, tmp_path):
    captured = []
    backend = backend_for(aws, captured)
    answer_one_completed_trial(backend)
    backend.tune(SPEC, {}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-grow", None)
    first = backend.client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-grow")
    done = sum(first["ObjectiveStatusCounters"].get(k, 0) for k in ("Succeeded", "Failed"))
    backend.tune({**SPEC, "max_jobs": 10}, {}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-grow", None)
    second = sent(captured, "CreateHyperParameterTuningJob")[1]
    assert second["HyperParameterTuningJobName"] == "tune-grow-w1"
    assert second["WarmStartConfig"] == {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "tune-grow"}],
        "WarmStartType": "IdenticalDataAndAlgorithm",
    }
    assert second["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 10 - done


def test_a_rerun_attaches_to_a_running_job(aws, tmp_path):
    captured = []
    backend = backend_for(aws, captured)
    put_job_outputs(aws, "train-running")
    backend.client.create_training_job(  # the job an earlier, interrupted run launched
        TrainingJobName="train-running",
        RoleArn=SETTINGS["role"],
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": f"s3://{aws}/jobs"},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
        ResourceConfig={"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
    )
    # moto's jobs complete at once: this one still runs when the rerun first looks
    statuses = iter(["InProgress", "Completed"])
    original = backend._describe_job
    backend._describe_job = lambda name: {**original(name), "TrainingJobStatus": next(statuses, "Completed")}
    result = backend.train("train-running", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")
    assert result["job_name"] == "train-running"
    assert [name for name, _ in captured if name == "CreateTrainingJob"] == [
        "CreateTrainingJob"
    ]  # only the earlier run's


def test_the_endpoint_estimate_says_per_hour_and_for_how_long(aws, tmp_path, capsys):
    backend = backend_for(aws, [], confirm=False, endpoint="instance")
    with pytest.raises(CloudCostNotConfirmed):
        backend.deploy(tmp_path / "model.tar.gz", "dogbreed-price", tmp_path / "state")
    out = capsys.readouterr().out
    assert (
        "1 × ml.m5.large × 24 h × $0.115/h = $2.76 for its first day; it bills every hour until `snakemake teardown`"
        in out
    )


def test_teardown_deletes_in_the_region_it_deployed_to(aws, tmp_path):
    backend = backend_for(aws, [])
    model_tar = tmp_path / "model.tar.gz"
    with tarfile.open(model_tar, "w:gz") as archive:
        archive.add(REPO / "scripts/inference.py", arcname="code/inference.py")
    backend.deploy(model_tar, "dogbreed-region", tmp_path / "state")
    deployed_in = json.loads((tmp_path / "state/state.json").read_text())["region"]
    elsewhere = backend_for(aws, [], region="eu-west-1")  # the settings changed since
    assert elsewhere.region == "eu-west-1" != deployed_in
    assert [d.split()[0] for d in elsewhere.teardown(tmp_path / "state")] == ["endpoint", "endpointconfig", "model"]
    assert backend._endpoint_status("dogbreed-region") is None


def test_a_throttled_lookup_is_not_taken_for_no_tuning_job(aws, tmp_path):
    from botocore.exceptions import ClientError

    captured = []
    backend = backend_for(aws, captured)

    def throttled(**_):
        raise ClientError(
            {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "DescribeHyperParameterTuningJob"
        )

    backend.client.meta.events.register("before-call.sagemaker.DescribeHyperParameterTuningJob", throttled)
    with pytest.raises(ClientError, match="Rate exceeded"):
        backend.tune(SPEC, {}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-throttled", None)
    assert sent(captured, "CreateHyperParameterTuningJob") == []  # no duplicate tuning job launched


def test_warm_start_takes_the_five_best_parents():
    jobs = [
        {
            "HyperParameterTuningJobName": f"t-w{i}",
            "BestTrainingJob": {"FinalHyperParameterTuningJobObjectiveMetric": {"Value": value}},
        }
        for i, value in enumerate([0.5, 0.9, 0.1, 0.7, 0.8, 0.6, 0.3])
    ] + [{"HyperParameterTuningJobName": "t-none"}]
    assert warm_start_parents(jobs, "Maximize") == {"t-w1", "t-w4", "t-w3", "t-w5", "t-w0"}
    assert warm_start_parents(jobs, "Minimize") == {"t-w2", "t-w6", "t-w0", "t-w5", "t-w3"}
    assert warm_start_parents(jobs[:2], "Maximize") == {"t-w0", "t-w1"}


def test_a_failed_job_says_why_in_our_words(aws, tmp_path, monkeypatch):
    """The project's JobFailed, with SageMaker's FailureReason and where the logs are, is what the user reads."""
    backend = backend_for(aws, [], logs="All")
    original = backend._describe_job
    monkeypatch.setattr(
        backend,
        "_describe_job",
        lambda name: (
            original(name)
            and {
                **original(name),
                "TrainingJobStatus": "Failed",
                "FailureReason": "AlgorithmError: ExecuteUserScriptError",
            }
        ),
    )
    with pytest.raises(
        JobFailed, match=r"train-fails ended Failed: AlgorithmError: ExecuteUserScriptError \(logs: CloudWatch"
    ):
        backend.train("train-fails", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")


@pytest.mark.parametrize("backend_name", ["sagemaker", "local_container"])
def test_a_weights_file_on_this_machine_is_refused_before_launching(aws, tmp_path, backend_name, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")  # refused before Docker is asked
    captured = []
    if backend_name == "sagemaker":
        backend = backend_for(aws, captured)
    else:  # local mode's client is the SDK's own, not botocore's: nothing is sent anywhere
        backend = get_backend(backend_name, {"metric_definitions": [], "output_s3_uri": f"file://{tmp_path}/jobs"})
    weights = {"weights": str(tmp_path / "resnet18-f37072fd.pth")}
    with pytest.raises(PlanRefused, match=r"model.weights is a file on this machine .*resnet18-f37072fd.pth"):
        backend.train("train-weights", {"lr": 0.1, **weights}, CHANNELS(aws), tmp_path, REPO / "scripts")
    with pytest.raises(PlanRefused, match="model.weights is a file on this machine"):
        backend.tune(
            SPEC, weights, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-weights", tmp_path / "study.sqlite"
        )
    assert sent(captured, "CreateTrainingJob") == sent(captured, "CreateHyperParameterTuningJob") == []


@pytest.mark.parametrize(
    "strategy, parameters, limits, early_stopping",
    [
        ("Hyperband", SPEC["parameters"], {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2}, "Off"),
        (
            "Grid",
            {
                "lr": {"type": "categorical", "values": [0.01, 0.1, 0.3]},
                "batch_size": {"type": "categorical", "values": [32, 64]},
            },
            {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2},
            "Auto",
        ),
    ],
)
def test_tuning_specs_are_sent_as_the_api_accepts_them(aws, tmp_path, strategy, parameters, limits, early_stopping):
    """Hyperband: the API requires early stopping Off. Grid: the job count must be the number of combinations."""
    captured = []
    backend = backend_for(aws, captured)
    answer_one_completed_trial(backend)
    backend.tune(
        {**SPEC, "strategy": strategy, "parameters": parameters},
        {},
        CHANNELS(aws),
        tmp_path,
        REPO / "scripts",
        f"tune-{strategy.lower()}",
        None,
    )
    config = sent(captured, "CreateHyperParameterTuningJob")[0]["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == strategy and config["ResourceLimits"] == limits
    assert config["TrainingJobEarlyStoppingType"] == early_stopping


def test_a_grid_of_continuous_ranges_is_refused_before_launching(aws, tmp_path):
    captured = []
    backend = backend_for(aws, captured)
    with pytest.raises(PlanRefused, match="Grid needs categorical parameters only.*these are not: lr"):
        backend.tune({**SPEC, "strategy": "Grid"}, {}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-grid-bad", None)
    assert sent(captured, "CreateHyperParameterTuningJob") == []


@pytest.mark.parametrize(
    "operation, limit",
    [
        ("CreateTrainingJob", "ml.g4dn.xlarge for spot training job usage"),
        ("CreateHyperParameterTuningJob", "ml.g4dn.xlarge for training job usage"),
        ("CreateEndpoint", "ml.m5.large for endpoint usage"),
    ],
)
def test_a_quota_of_zero_becomes_advice(aws, tmp_path, operation, limit):
    """New accounts often have a quota of 0 for GPU and spot training: the error says which quota and how to raise it."""
    from botocore.exceptions import ClientError

    backend = backend_for(aws, [], use_spot=True)
    message = (
        f"The account-level service limit '{limit}' is 0 Instances, with current utilization of 0 Instances and "
        f"a request delta of 1 Instances. Please use AWS Service Quotas to request an increase for this quota."
    )

    def refused(**_):
        raise ClientError({"Error": {"Code": "ResourceLimitExceeded", "Message": message}}, operation)

    backend.client.meta.events.register(f"before-call.sagemaker.{operation}", refused)
    expected = rf"Request an increase of '{limit}' in the Service Quotas console .*region us-east-1.*use_spot: false"
    with pytest.raises(JobFailed, match=expected):
        if operation == "CreateTrainingJob":
            backend.train("train-quota", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")
        elif operation == "CreateHyperParameterTuningJob":
            backend.tune(SPEC, {}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-quota", None)
        else:
            model_tar = tmp_path / "model.tar.gz"
            with tarfile.open(model_tar, "w:gz") as archive:
                archive.add(REPO / "scripts/inference.py", arcname="code/inference.py")
            backend.deploy(model_tar, "dogbreed-quota", tmp_path / "state")


def test_v100_instances_are_refused_before_launching(aws, tmp_path):
    captured = []
    backend = backend_for(aws, captured, instance_type="ml.p3.2xlarge")
    with pytest.raises(PlanRefused, match=r"ml.p3.2xlarge has V100 GPUs \(CUDA sm_70\).*PyTorch 2.8"):
        backend.train("train-v100", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")
    assert sent(captured, "CreateTrainingJob") == []


def test_a_tuning_jobs_trials_become_runs_after_it_and_a_server_uri_reaches_the_job(aws, tmp_path, capsys):
    """SageMaker's tuner runs the trials: their MLflow runs are logged from its trials table afterwards, once.
    A tracking server (not this machine's SQLite file) reaches the training job through its environment."""
    from conftest import job_runs
    from dogbreed.runtime import tracking

    captured = []
    backend = backend_for(aws, captured)
    answer_one_completed_trial(backend)
    tracker = tracking.Tracker(f"sqlite:///{tmp_path}/mlflow.db", "dog-breed")
    trials = tracking.TrialTracking(
        tracker, tracker.workflow_run(tmp_path / "results", "tune-mlf", "sagemaker"), "sagemaker"
    )
    for _ in range(2):  # a rerun logs no trial twice
        backend.tune(SPEC, {"epochs": 3}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-mlf", None, tracking=trials)
    out = capsys.readouterr().out
    assert "sagemaker jobs cannot reach sqlite:///" in out and "logged from the workflow after it" in out
    ((run, history),) = job_runs(tmp_path, "t-1")
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.01" and run.data.params["epochs"] == "3"
    assert history["valid_accuracy"] == [(0, 0.5)]

    put_job_outputs(aws, "train-mlf")
    environment = tracker.job_environment("abc123") | {"MLFLOW_TRACKING_URI": "https://mlflow.example.com"}
    backend.train("train-mlf", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts", environment=environment)
    (request,) = sent(captured, "CreateTrainingJob")
    assert request["Environment"]["MLFLOW_RUN_ID"] == "abc123"
    assert request["Environment"]["MLFLOW_TRACKING_URI"] == "https://mlflow.example.com"


def test_a_local_job_imports_no_sagemaker_module(tiny_channels, tmp_path):
    """The SageMaker SDK is the cloud backends' alone: a training job on the local backend, and the rule's process
    that runs it, load no `sagemaker` module (the inference toolkit's `sagemaker_inference` is another package)."""
    import ast
    import subprocess
    import sys

    channels, _ = tiny_channels
    script = f"""
import json, sys
sys.path[:0] = [{str(REPO / "workflow")!r}, {str(REPO / "scripts")!r}]
from dogbreed.backends.registry import get_backend
result = get_backend("local", {{}}).train(
    "no-sdk", {{"weights": "none", "image_size": 32, "epochs": 1, "batch_size": 8, "num_workers": 0}},
    {{"train": "file://{channels}/train", "valid": "file://{channels}/valid"}}, {str(tmp_path)!r},
    {str(REPO / "scripts")!r}, echo=False)
print(json.dumps([result["status"], sorted(m for m in sys.modules if m.split(".")[0] == "sagemaker")]))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.splitlines()[-1]) == ["Completed", []]
    # the job's own process runs scripts/ only, which import no `sagemaker` module either
    for path in (REPO / "scripts").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {name for name in imported if name.split(".")[0] == "sagemaker"}, path


def test_the_users_sdk_defaults_reach_jobs_trials_and_the_endpoint(aws, tmp_path, monkeypatch):
    """Subnets, security groups and KMS keys from the user's SDK defaults config reach every request that takes them,
    as v2's estimators and models took them; the request's own values win. Not a job's network isolation (its code
    comes from S3), nor a volume key where the instance's storage is its own (g4dn)."""
    config = tmp_path / "sagemaker-defaults.yaml"
    vpc = {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}
    config.write_text(
        json.dumps(
            {
                "SchemaVersion": "1.0",
                "SageMaker": {
                    "PythonSDK": {"Modules": {"TelemetryOptOut": True}},
                    "TrainingJob": {
                        "VpcConfig": vpc,
                        "OutputDataConfig": {"KmsKeyId": "kms-out"},
                        "ResourceConfig": {"VolumeKmsKeyId": "kms-volume"},
                        "EnableNetworkIsolation": True,
                    },
                    "Model": {"VpcConfig": vpc, "EnableNetworkIsolation": True},
                    "EndpointConfig": {"KmsKeyId": "kms-endpoint"},
                },
            }
        )
    )
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
    captured = []
    backend = backend_for(aws, captured, use_spot=True, endpoint="instance")
    put_job_outputs(aws, "train-vpc")
    backend.train("train-vpc", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")
    (job,) = sent(captured, "CreateTrainingJob")
    assert job["VpcConfig"] == vpc and "EnableNetworkIsolation" not in job
    assert job["OutputDataConfig"] == {"S3OutputPath": f"s3://{aws}/jobs", "KmsKeyId": "kms-out"}
    assert "VolumeKmsKeyId" not in job["ResourceConfig"] and job["ResourceConfig"]["VolumeSizeInGB"] == 50
    code = boto3.client("s3").head_object(Bucket=aws, Key="jobs/train-vpc/source/sourcedir.tar.gz")
    assert code["ServerSideEncryption"] == "aws:kms" and code["SSEKMSKeyId"].endswith("kms-out")  # the code too
    on_m5 = backend_for(aws, captured, instance_type="ml.m5.xlarge")
    put_job_outputs(aws, "train-m5")
    on_m5.train("train-m5", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")
    assert sent(captured, "CreateTrainingJob")[1]["ResourceConfig"]["VolumeKmsKeyId"] == "kms-volume"

    answer_one_completed_trial(backend)
    backend.tune(SPEC, {}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-vpc", None)
    (definition,) = [r["TrainingJobDefinition"] for r in sent(captured, "CreateHyperParameterTuningJob")]
    assert definition["VpcConfig"] == vpc and definition["OutputDataConfig"]["KmsKeyId"] == "kms-out"
    assert "VolumeKmsKeyId" not in definition["HyperParameterTuningResourceConfig"]

    model_tar = tmp_path / "model.tar.gz"
    with tarfile.open(model_tar, "w:gz") as archive:
        archive.add(REPO / "scripts/inference.py", arcname="code/inference.py")
    backend.deploy(model_tar, "dogbreed-vpc", tmp_path / "state")
    (model,) = sent(captured, "CreateModel")
    assert model["VpcConfig"] == vpc and model["EnableNetworkIsolation"] is True
    assert sent(captured, "CreateEndpointConfig")[0]["KmsKeyId"] == "kms-endpoint"
    backend.teardown(tmp_path / "state")
    # a serverless endpoint takes no VPC and no network isolation
    backend_for(aws, captured).deploy(model_tar, "dogbreed-vpc", tmp_path / "state")
    assert {"VpcConfig", "EnableNetworkIsolation"}.isdisjoint(sent(captured, "CreateModel")[1])
    backend.teardown(tmp_path / "state")


def test_a_tuned_name_is_the_tuners_alone(aws, tmp_path):
    """A hyperparameter the config fixes and the spec tunes is sent as a range only, not as a static value too."""
    captured = []
    backend = backend_for(aws, captured)
    answer_one_completed_trial(backend)
    backend.tune(SPEC, {"lr": 0.5, "epochs": 3}, CHANNELS(aws), tmp_path, REPO / "scripts", "tune-static", None)
    static = sent(captured, "CreateHyperParameterTuningJob")[0]["TrainingJobDefinition"]["StaticHyperParameters"]
    assert static["epochs"] == "3" and "lr" not in static and "batch_size" not in static


def test_an_empty_tag_value_is_sent(aws, tmp_path):
    captured = []
    backend = backend_for(aws, captured, tags={"team": ""})
    put_job_outputs(aws, "train-tag")
    backend.train("train-tag", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")
    assert sent(captured, "CreateTrainingJob")[0]["Tags"] == [{"Key": "team", "Value": ""}]


def test_log_lines_that_cannot_be_read_are_said_once_and_the_job_is_followed(aws, tmp_path, capsys):
    backend = backend_for(aws, [], logs="All")
    logs = backend._client("logs")
    denied = []

    def refused(**_):
        denied.append(1)
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, "DescribeLogStreams"
        )

    logs.meta.events.register("before-call.logs.DescribeLogStreams", refused)
    put_job_outputs(aws, "train-nologs")
    assert (
        backend.train("train-nologs", {"lr": 0.1}, CHANNELS(aws), tmp_path, REPO / "scripts")["status"] == "Completed"
    )
    assert len(denied) == 1 and capsys.readouterr().out.count("cannot be read") == 1


def test_no_region_is_one_clear_error(tmp_path, monkeypatch):
    for key in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    backend = get_backend("sagemaker", {**SETTINGS, "output_s3_uri": "s3://b/jobs", "confirm_cloud": True})
    with pytest.raises(JobFailed, match=r"^no AWS region: set backends.sagemaker.region"):
        backend.train("train-nowhere", {"lr": 0.1}, {"train": "s3://b/data/train"}, tmp_path, REPO / "scripts")


def test_local_mode_output_is_quiet_for_the_job_that_asks_only(capsys):
    """backends.local_container.logs None: the job's thread prints nothing to the terminal; a parallel trial's
    thread that did not ask still does."""
    import threading

    from dogbreed.backends.local_container import _quiet

    def job(quiet, text, started, release):
        with _quiet(quiet):
            started.set()
            release.wait(5)
            sys.stdout.write(text)

    release, events = threading.Event(), [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(target=job, args=(True, "quiet job\n", events[0], release)),
        threading.Thread(target=job, args=(False, "loud job\n", events[1], release)),
    ]
    for thread in threads:
        thread.start()
    for event in events:
        event.wait(5)
    release.set()
    for thread in threads:
        thread.join(5)
    out = capsys.readouterr().out
    assert "loud job" in out and "quiet job" not in out


def test_the_endpoint_list_says_what_a_sagemaker_endpoint_has_cost_so_far(aws, tmp_path):
    from datetime import timedelta

    from dogbreed.serving import endpoint_registry

    backend = backend_for(aws, [], endpoint="instance")
    model_tar = tmp_path / "model.tar.gz"
    with tarfile.open(model_tar, "w:gz") as archive:
        archive.add(REPO / "scripts/inference.py", arcname="code/inference.py")
    state_dir = tmp_path / "endpoints/dogbreed-listed"
    endpoint_registry.note_run(state_dir, "results-sagemaker", "sagemaker")
    endpoint = backend.deploy(model_tar, "dogbreed-listed", state_dir)
    two_hours_on = datetime.fromisoformat(endpoint["started_at"]) + timedelta(hours=2, minutes=5)
    (line,) = endpoint_registry.listing(tmp_path / "endpoints", now=two_hours_on)
    assert line.startswith(
        "dogbreed-listed (sagemaker, SageMaker, us-east-1, up 2 h 05 min, instance endpoint, 1 × ml.m5.large at "
        "$0.115/h, $0.24 so far, results in results-sagemaker); stop it: snakemake teardown"
    ), line
    backend.teardown(state_dir)
    assert endpoint_registry.listing(tmp_path / "endpoints") == []


def test_a_serverless_endpoint_is_the_default_and_costs_nothing_while_idle(aws, tmp_path, capsys):
    """No instances: a serverless config (memory, concurrency), priced per second of compute, requests packed under
    its 4 MB, listed as serverless, and torn down like the other kind."""
    from dogbreed.serving import endpoint_registry, evaluation

    captured = []
    backend = backend_for(
        aws, captured, serverless_memory_mb=2048, serverless_max_concurrency=3, inference_instance_type="ml.g4dn.xlarge"
    )
    model_tar = tmp_path / "model.tar.gz"
    with tarfile.open(model_tar, "w:gz") as archive:
        archive.add(REPO / "scripts/inference.py", arcname="code/inference.py")
    state_dir = tmp_path / "endpoints/dogbreed-serverless"
    endpoint = backend.deploy(model_tar, "dogbreed-serverless", state_dir)
    (variant,) = sent(captured, "CreateEndpointConfig")[0]["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 3}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant
    # CPUs only: the CPU image, whatever inference_instance_type says
    assert sent(captured, "CreateModel")[0]["PrimaryContainer"]["Image"].endswith("/pytorch-inference:2.6-cpu-py312")
    assert (
        "endpoint dogbreed-serverless: serverless, 2048 MB: $0.000040 per second of compute, billed per request "
        "(at most 60 s each: $0.0024); nothing while idle"
    ) in capsys.readouterr().out
    assert evaluation.request_byte_limit(backend, endpoint, 5_000_000) == 4_000_000
    assert evaluation.request_byte_limit(backend_for(aws, [], endpoint="instance"), {}, 7_000_000) == 6_291_456
    (line,) = endpoint_registry.listing(tmp_path / "endpoints")
    assert "serverless endpoint, 2048 MB, billed per request at $0.000040 per second of compute" in line
    assert [d.split()[0] for d in backend.teardown(state_dir)] == ["endpoint", "endpointconfig", "model"]
