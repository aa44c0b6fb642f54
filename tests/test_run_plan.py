"""The run plan (workflow/dogbreed/runtime/run_plan.py): every refusal from the config alone, before any side effect and
before any network request, and the whole run priced, the feature extraction included. AWS points at a local
port that counts what reaches it: nothing may."""

import socket
import threading

import pytest
import yaml
from conftest import REPO, copy_workflow, full_config, snakemake
from dogbreed.backends.registry import get_backend
from dogbreed.runtime import run_plan

SAGEMAKER = {
    "backend": "sagemaker",
    "store": {"uri": "s3://bucket/dog-breed"},
    "backends": {
        "sagemaker": {
            "role": "arn:aws:iam::123456789012:role/R",
            "prices_per_hour": {
                "ml.g4dn.xlarge": 0.736,
                "ml.g4dn.12xlarge": 4.89,
                "ml.m5.large": 0.115,
                "ml.m5.xlarge": 0.23,
            },
        }
    },
}


def sagemaker(**settings):
    return {"backends": {"sagemaker": settings}}


# (overlay, the words of the refusal)
REFUSED = [
    (
        {"backends": {"local": {"host": "0.0.0.0"}}},
        "backends.local.host is '0.0.0.0': the endpoint would answer anyone",
    ),
    (
        {"backend": "local_container", "backends": {"local_container": {"host": "my-laptop.example"}}},
        "backends.local_container.host is 'my-laptop.example'",
    ),
    (
        {**SAGEMAKER, **sagemaker(instance_count=2)},
        "backends.sagemaker.instance_count is 2, but training.processes is 1: the 2 instances would each train the same model alone",
    ),
    ({**SAGEMAKER, **sagemaker(instance_type="ml.p3.2xlarge")}, "ml.p3.2xlarge has V100 GPUs (CUDA sm_70)"),
    (
        {**SAGEMAKER, **sagemaker(use_spot=True, max_run_hours=6, max_wait_hours=4)},
        "backends.sagemaker.max_wait_hours (4) is below max_run_hours (6)",
    ),
    (
        {
            **SAGEMAKER,
            "tuning": {
                "strategy": "Random",
                "max_jobs": 6,
                "parameters": {
                    "lr": {"type": "continuous", "min": 0.001, "max": 0.1},
                    "batch_size": {"type": "categorical", "values": [32]},
                },
            },
        },
        None,
    ),
    (
        {
            "tuning": {
                "max_jobs": 6,
                "parameters": {
                    "batch_size": {"type": "categorical", "values": [32, 64]},
                    "lr": {"type": "categorical", "values": [0.01, 0.1]},
                },
            }
        },
        "tuning.max_jobs is 6, but tuning.parameters has only 4 combination(s)",
    ),
    (
        {**SAGEMAKER, "training": {"processes": 2}},
        (
            "training.processes is 2, but 1 × ml.g4dn.xlarge have 1 GPU(s), and SageMaker's torch_distributed starts one "
            "process per GPU: set training.processes to 1"
        ),
    ),
    (
        {**SAGEMAKER, **sagemaker(instance_type="ml.m5.xlarge"), "training": {"processes": 2}},
        "training.processes is 2, but backends.sagemaker.instance_type ml.m5.xlarge has no GPU",
    ),
    (
        {**SAGEMAKER, **sagemaker(instance_type="ml.g4dn.12xlarge", instance_count=2), "training": {"processes": 4}},
        "set training.processes to 8",
    ),
    (  # the SDK's alias for 2.4 is 2.4.0; its torch_distributed launcher takes 2.4.1 only
        {
            **SAGEMAKER,
            **sagemaker(instance_type="ml.g4dn.12xlarge", framework_version="2.4"),
            "training": {"processes": 4},
        },
        "SageMaker's torch_distributed launcher does not take backends.sagemaker.framework_version 2.4",
    ),
    (
        {"backend": "local_container", "backends": {"local_container": {"instance_count": 2}}},
        "backends.local_container.instance_count is 2, but local mode runs each job in one container",
    ),
    ({"backend": "sagemaker"}, "set store.uri to s3://bucket/prefix (now file://store)"),
    ({**SAGEMAKER, "model": {"weights": "/models/resnet18.pth"}}, "model.weights is a file on this machine"),
]


@pytest.fixture
def aws_listener(monkeypatch):
    """Every AWS client of this process pointed at a local port that counts the connections made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    connections, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            connections.append(connection)
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_SAGEMAKER"):
        monkeypatch.setenv(variable, url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield url, connections
    stop.set()
    thread.join(timeout=5)
    server.close()


def test_the_listener_sees_what_a_client_would_send(aws_listener):
    """The check below can fail: an S3 request does reach the listener (which answers nothing)."""
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3", config=Config(connect_timeout=2, read_timeout=2, retries={"total_max_attempts": 1})
    )
    from botocore.exceptions import BotoCoreError

    with pytest.raises(BotoCoreError):  # the listener closes the connection unanswered
        client.list_buckets()
    assert len(aws_listener[1]) == 1


@pytest.mark.parametrize("overlay, words", REFUSED)
def test_each_refusal_names_its_settings_and_sends_nothing(overlay, words, aws_listener):
    config = full_config(overlay)
    if words is None:  # a continuous range beside one categorical value: as many trials as max_jobs says
        run_plan.check(config)
        return
    with pytest.raises(run_plan.PlanRefused, match=None) as refused:
        run_plan.check(config)
    assert words in str(refused.value) and "\n" not in str(refused.value)
    assert aws_listener[1] == []


def test_the_backends_refuse_the_same_shapes_before_any_request(aws_listener, tmp_path):
    """Called directly (not through a rule), SageMaker's train and tune refuse with the plan's own words, before
    the SDK sends anything: no STS, no Describe*, no S3."""
    channels = {"train": "s3://bucket/d/train", "valid": "s3://bucket/d/valid"}
    base = {
        **full_config(SAGEMAKER)["backends"]["sagemaker"],
        "metric_definitions": [],
        "output_s3_uri": "s3://bucket/jobs",
        "confirm_cloud": True,
    }
    for settings, call, words in [
        (
            {**base, "instance_count": 2},
            lambda b: b.train("train-x", {}, channels, tmp_path, REPO / "scripts", instances=2),
            "training.processes is 1",
        ),
        (
            {**base, "instance_type": "ml.m5.xlarge"},
            lambda b: b.train("train-x", {}, channels, tmp_path, REPO / "scripts", processes=2),
            "has no GPU",
        ),
        (
            base,
            lambda b: b.tune(
                {"strategy": "Grid", "parameters": {"lr": {"type": "continuous", "min": 0.1, "max": 1}}},
                {},
                channels,
                tmp_path,
                REPO / "scripts",
                "tune-x",
                None,
            ),
            "Grid needs categorical",
        ),
    ]:
        backend = get_backend("sagemaker", settings)
        with pytest.raises(run_plan.PlanRefused, match=words):
            call(backend)
    assert aws_listener[1] == []


def test_the_plan_prices_every_job_the_extraction_included():
    config = full_config(SAGEMAKER, {"hyperparameters": {"freeze_backbone": True}, "tuning": {"max_jobs": 4}})
    plan = run_plan.describe(config)
    assert "a feature-extraction job, a tuning job of 4 trials, a final training job" in plan
    lines = [line for _, line in run_plan.costs(config)]
    assert lines[0].startswith("feature-extraction job: 1 × ml.g4dn.xlarge × up to 4 h")
    assert lines[1].startswith("tuning job (4 trials): 4 × ml.g4dn.xlarge")
    assert lines[3].startswith("endpoint: serverless, 3072 MB")
    instance = full_config(SAGEMAKER, sagemaker(endpoint="instance"))
    assert run_plan.costs(instance)[-1][1].startswith("endpoint: 1 × ml.m5.large × 24 h")
    ddp = full_config(
        SAGEMAKER, sagemaker(instance_type="ml.g4dn.12xlarge", instance_count=2), {"training": {"processes": 8}}
    )
    assert "a final training job on 2 instances" in run_plan.describe(ddp)
    assert any(line.startswith("training job: 2 × ml.g4dn.12xlarge") for _, line in run_plan.costs(ddp))
    assert "feature-extraction" not in run_plan.describe(full_config(SAGEMAKER))  # fine-tuning: no cache


def test_a_spot_job_is_priced_by_its_billable_time_not_its_wait():
    """SageMaker bills a spot job's training time, which max_run bounds; the wait for capacity (max_wait) is free."""
    shipped = yaml.safe_load((REPO / "config/sagemaker.yaml").read_text())
    config = full_config(shipped, {"store": {"uri": "s3://bucket/dog-breed"}})
    settings = config["backends"]["sagemaker"]
    assert settings["use_spot"] and settings["max_wait_hours"] > settings["max_run_hours"] == 2
    lines = [line for _, line in run_plan.costs(config)]
    assert all(" × up to 2 h " in line for line in lines[:-1]), lines
    # config/sagemaker.yaml's comment: the serverless endpoint (the default) adds nothing while idle; an instance
    # endpoint's first day added $2.76 to the $13.06 the estimate said before serverless was the default
    assert round(sum(dollars for dollars, _ in run_plan.costs(config)), 2) == 10.30
    assert lines[-1].startswith("endpoint: serverless, 3072 MB: $0.000060 per second of compute, billed per request")


def test_a_refused_run_stops_before_its_first_rule_and_sends_nothing(tmp_path, aws_listener, tiny_dataset):
    """The real workflow: a dry run and a run of the cloud backend with instance_count 2 and one process are refused
    when the workflow is read, naming the settings; nothing is fetched, nothing reaches AWS."""
    work = copy_workflow(tmp_path)
    (work / "config/refused.yaml").write_text(yaml.safe_dump({**SAGEMAKER, **sagemaker(instance_count=2)}))
    for args in (("-n",), ()):
        result = snakemake(
            work,
            *args,
            "deploy",
            "--configfile",
            "config/demo.yaml",
            "config/refused.yaml",
            "--config",
            f"data_source={tiny_dataset}",
            "confirm_cloud=true",
            check=False,
        )
        out = result.stdout + result.stderr
        assert result.returncode != 0 and "backends.sagemaker.instance_count is 2, but training.processes is 1" in out
    assert not (work / "data").exists() and not (work / "results-demo").exists()
    assert aws_listener[1] == []


def test_the_tuning_spec_is_checked_once_parameters_at_config_time_the_search_in_the_plan():
    """tuning/spec.py: each parameter when the config is read (every target, teardown too: a spec is the tuning's to
    refuse, and a config without the schema's defaults yet must not crash it), the search for its tuner in the plan."""
    from dogbreed.runtime.config import check_config
    from dogbreed.tuning import spec as tuning_spec

    schema = REPO / "workflow/schemas/config.schema.yaml"
    categorical = {"type": "categorical", "values": [16, 32]}
    search = {"max_jobs": 6, "parameters": {"batch_size": categorical, "lr": {**categorical, "values": [0.01, 0.1]}}}
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["tuning"] = {k: v for k, v in raw["tuning"].items() if k != "strategy"} | search
    check_config(raw, schema)  # no strategy yet (the schema's default fills it in), a search the plan refuses
    assert "only 4 combination(s)" in "; ".join(run_plan.refusals(full_config({"tuning": search})))
    reverse = {"parameters": {"lr": {"type": "continuous", "min": 0.01, "max": 0.9, "scaling": "ReverseLogarithmic"}}}
    assert "no Optuna counterpart" in "; ".join(run_plan.refusals(full_config({"tuning": reverse})))
    assert tuning_spec.problems(full_config({"tuning": reverse})["tuning"], None, "sagemaker") == []
