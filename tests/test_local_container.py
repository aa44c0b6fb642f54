"""SageMaker local mode for real (make test-container): the Snakemake workflow with backend:
local_container on a Docker engine, its trials and final training as local-mode training jobs in the
training image (SageMaker's training toolkit), its endpoint the inference image (TorchServe under
SageMaker's inference toolkits), answering exactly as the local server does."""

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import time

import numpy as np
import pytest
import serving_contract
import yaml
from conftest import (
    REPO,
    TINY_CLASSES,
    assert_deployed_outputs,
    copy_workflow,
    endpoint_state_dir,
    recorded_endpoints,
    snakemake,
)
from dogbreed.backends import containers
from dogbreed.backends.base import ping
from dogbreed.backends.errors import EndpointGone, JobFailed
from dogbreed.backends.local import LocalBackend
from dogbreed.backends.local_container import LocalContainerBackend
from dogbreed.data import demo_data

pytestmark = pytest.mark.container
ARGS = ("--configfile", "config/demo.yaml", "config/test.yaml")


def running_containers():
    return set(
        subprocess.run(["/usr/bin/docker", "ps", "-aq"], capture_output=True, text=True, check=True).stdout.split()
    )


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    containers.docker_client()  # no engine: fail here with the message that says how to start one
    before = running_containers()
    # the demo's data and settings (make demo), on local_container
    work = copy_workflow(tmp_path_factory.mktemp("container-workflow"))
    (work / "config/test.yaml").write_text(yaml.safe_dump({"backend": "local_container", "results_dir": "results"}))
    try:
        run = snakemake(work, *ARGS, timeout=1800)
        yield work, run
    finally:
        for state_dir in recorded_endpoints(work):
            LocalContainerBackend({}).teardown(state_dir)  # never leave a container running
        assert running_containers() <= before, "containers were left behind"


@pytest.fixture(scope="module")
def local_endpoint(deployed, tmp_path_factory):
    """The same served artifact behind the local backend's server, for side-by-side answers."""
    work, _ = deployed
    state = tmp_path_factory.mktemp("local-endpoint")
    backend = LocalBackend({})
    endpoint = backend.deploy(work / "results/deploy/model.tar.gz", "side-by-side", state)
    yield endpoint["url"]
    backend.teardown(state)


def container_url(work):
    return json.loads((work / "results/endpoint.json").read_text())["url"]


def test_the_workflow_runs_through_deploy_in_containers(deployed):
    work, _ = deployed
    metrics = assert_deployed_outputs(work / "results", backend="local_container", epochs=6, trials=3)
    assert metrics["n"] == 60 and metrics["accuracy"] > 2 * metrics["chance_accuracy"], metrics  # 6 classes
    # the jobs really ran in the training image, under SageMaker's training toolkit
    job_logs = sorted((work / "results/jobs").glob("*/log.txt"))
    assert len(job_logs) == 4  # 3 trials and the final training, each its own local-mode job
    for log in job_logs:
        text = log.read_text()
        assert "sagemaker-training-toolkit INFO" in text and "Reporting training SUCCESS" in text, log
        assert re.search(r"epoch=1 train_loss=\S+ .*valid_accuracy=", text), log  # the same metric lines
    # the containers run as root, but only this process writes the workflow's files
    written = [p for folder in ("results", "store") for p in (work / folder).rglob("*")]
    assert written and all(p.lstat().st_uid == os.getuid() for p in written)
    assert not list((work / "scripts").rglob("__pycache__"))  # source_dir is mounted into the jobs
    state = json.loads((endpoint_state_dir(work) / "state.json").read_text())
    assert state["image"].endswith("pytorch-inference:2.6-cpu-py312")
    assert state["url"] == container_url(work) and state["url"].startswith("http://127.0.0.1:")


def test_the_endpoint_outlives_snakemake_and_a_rerun_does_nothing(deployed):
    work, _ = deployed
    out = snakemake(work, "-n", *ARGS).stdout
    assert "Nothing to be done" in out
    assert serving_contract.post(container_url(work), "image/jpeg", served_image(work), None).status_code == 200


def test_the_endpoint_list_shows_the_container(deployed):
    work, _ = deployed
    state = json.loads((endpoint_state_dir(work) / "state.json").read_text())
    listed = snakemake(work, "endpoints", *ARGS)
    said = listed.stdout + listed.stderr
    assert f"{state['endpoint_name']} (local_container, {state['url']}, up " in said, said
    assert "stop it: snakemake teardown" in said


def test_client_mistakes_get_the_same_answer_as_from_the_local_server(deployed, local_endpoint):
    """Through TorchServe and SageMaker's inference toolkit, the handler's RequestError keeps its 4xx and
    its one-line JSON message as the first line (the toolkit appends a traceback after it)."""
    work, _ = deployed
    image = served_image(work)
    for what, content_type, body, accept, status in serving_contract.bad_requests(image, 64):
        local = serving_contract.post(local_endpoint, content_type, body, accept)
        toolkit = serving_contract.post(container_url(work), content_type, body, accept)
        assert local.status_code == toolkit.status_code == status, (
            what,
            local.status_code,
            toolkit.status_code,
            toolkit.text[:400],
        )
        assert serving_contract.first_line(toolkit) == serving_contract.first_line(local), what
        assert set(json.loads(serving_contract.first_line(toolkit))) == {"error"}


def test_no_hostile_request_gets_a_5xx_through_the_toolkit(deployed):
    """The end-to-end test's 300-case fuzz, through TorchServe and SageMaker's inference toolkit: a 2xx
    or a 4xx whose first line is {"error": ...} (TorchServe's own 413 aside: it refuses a body over its
    6.5 MB before the handler, with its own JSON)."""
    work, _ = deployed
    url = container_url(work)
    statuses = {}
    for what, content_type, body, accept in serving_contract.hostile_requests(served_image(work), 64):
        answer = serving_contract.post(url, content_type, body, accept)
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, (what, answer.status_code, answer.text[:400])
        if answer.status_code >= 400 and not (answer.status_code == 413 and len(body) > 6_553_500):
            assert set(json.loads(serving_contract.first_line(answer))) == {"error"}, (what, answer.text[:400])
    assert statuses.get(200, 0) >= 10 and {400, 406, 415} <= set(statuses)
    assert ping(url)  # still serving


def test_concurrent_mixed_requests_each_get_their_own_answer_through_torchserve(deployed):
    """TorchServe batches for the toolkit only at batch size 1 (backends/base.py TOOLKIT_SERVING_ENVIRONMENT:
    its transformer would decode a whole batch with the first request's headers); mixed content types
    and a bad request at once each get the answer they get alone."""
    work, _ = deployed
    assert serving_contract.concurrent_mixed_requests(container_url(work), served_image(work), 64) == []


def test_good_requests_get_the_same_answer_as_from_the_local_server(deployed, local_endpoint):
    work, _ = deployed
    for what, content_type, body, accept in serving_contract.good_requests(served_image(work), 64):
        local = serving_contract.post(local_endpoint, content_type, body, accept)
        toolkit = serving_contract.post(container_url(work), content_type, body, accept)
        assert local.status_code == toolkit.status_code == 200, (what, toolkit.text[:400])
        assert toolkit.headers["Content-Type"].split(";")[0] == local.headers["Content-Type"].split(";")[0], what
        assert serving_contract.same_answer(serving_contract.decoded(local), serving_contract.decoded(toolkit)), what


def test_the_sagemaker_sdks_own_clients_get_the_same_answers(deployed, local_endpoint):
    work, _ = deployed
    image = served_image(work)
    port = lambda url: int(url.rsplit(":", 1)[1])
    local = serving_contract.sdk_predictions(port(local_endpoint), image, 64)
    toolkit = serving_contract.sdk_predictions(port(container_url(work)), image, 64)
    assert serving_contract.same_answer(local["json"], toolkit["json"])
    assert serving_contract.same_answer(local["image"], toolkit["image"])
    assert toolkit["npy"].shape == (3, 6) and np.allclose(local["npy"], toolkit["npy"], atol=1e-4)


def test_teardown_stops_the_container(deployed, tmp_path):
    work, _ = deployed
    state = json.loads((endpoint_state_dir(work) / "state.json").read_text())
    snakemake(work, "teardown", *ARGS)
    assert state["container_id"] not in running_containers()
    assert not ping(state["url"])
    assert (work / "results/logs/endpoint-server.log").read_text().strip()  # the container's output is kept


def test_local_gpu_asks_compose_for_the_gpu(tmp_path, monkeypatch):
    """local_gpu: the compose file the SDK's local mode writes reserves every GPU (the NVIDIA runtime does the rest;
    untested on a real GPU: the lent GPU machine has no Docker)."""
    from sagemaker.core.local.image import _SageMakerContainer

    backend = LocalContainerBackend(
        {"instance_type": "local_gpu", "output_s3_uri": f"file://{tmp_path}/jobs", "metric_definitions": []}
    )
    request = backend.training_request("gpu-job", {"epochs": 1}, {}, f"file://{tmp_path}")
    image = request["AlgorithmSpecification"]["TrainingImage"]
    assert image.endswith("pytorch-training:2.8-gpu-py312")
    assert request["ResourceConfig"]["InstanceType"] == "local_gpu"
    container = _SageMakerContainer("local_gpu", 1, image, backend.local_session())
    container.container_root = str(tmp_path)
    compose = container._generate_compose_file("train", additional_volumes=[], additional_env_vars={})
    service = next(iter(compose["services"].values()))
    assert service["deploy"]["resources"]["reservations"]["devices"] == [{"count": "all", "capabilities": ["gpu"]}]
    assert yaml.safe_load((tmp_path / "docker-compose.yaml").read_text())["services"]


def test_a_missing_image_is_one_clear_error(tmp_path):
    backend = LocalContainerBackend(
        {"training_image": "example.invalid/nothing:here", "output_s3_uri": f"file://{tmp_path}"}
    )
    with pytest.raises(containers.ContainerSetupError, match="make container-images"):
        backend.train("missing", {}, {}, tmp_path, tmp_path)


def served_image(work):
    return next(p for p in sorted((work / "results/data/channels/test").rglob("*")) if p.is_file()).read_bytes()


@pytest.fixture(scope="module")
def tiny_channels_on_disk(tmp_path_factory):
    data = demo_data.generate(
        tmp_path_factory.mktemp("tiny-jobs"),
        seed=1,
        classes=TINY_CLASSES,
        per_split={"train": 12, "valid": 4},
        corrupt_file=False,
    )
    return {"train": f"file://{data}/train", "valid": f"file://{data}/valid"}


def test_a_failing_job_says_why_and_leaves_no_container(tmp_path, tiny_channels_on_disk):
    before = running_containers()
    backend = LocalContainerBackend({"output_s3_uri": f"file://{tmp_path}/store/jobs", "metric_definitions": []})
    with pytest.raises(JobFailed, match=r"(?s)failed.*unknown arch 'no-such-net'"):
        backend.train(
            "failing", {"arch": "no-such-net", "epochs": 1}, tiny_channels_on_disk, tmp_path / "jobs", REPO / "scripts"
        )
    assert running_containers() <= before


def test_an_interrupted_job_leaves_no_container(tmp_path, tiny_channels_on_disk):
    """Ctrl-C, or Snakemake stopping the rule, in the middle of a local-mode job: the SDK's docker-compose
    would train on; the backend removes the job's containers."""
    script = tmp_path / "interrupted.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "workflow")!r})
        from dogbreed.backends.local_container import LocalContainerBackend
        backend = LocalContainerBackend({{"output_s3_uri": "file://{tmp_path}/jobs", "metric_definitions": []}})
        backend.train("interrupted", {{"epochs": 5000, "image_size": 32, "weights": "none", "num_workers": 0}},
                      {tiny_channels_on_disk!r}, {str(tmp_path / "jobs")!r}, {str(REPO / "scripts")!r})
    """)
    )
    before = running_containers()
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, client = time.time() + 300, containers.docker_client()
        while not any(b"epoch=1 " in client.containers.get(c).logs() for c in running_containers() - before):
            assert process.poll() is None and time.time() < deadline, "the job did not start training"
            time.sleep(1)
        process.send_signal(signal.SIGINT)  # it trains in its container
        assert process.wait(timeout=120) != 0
    finally:
        process.kill()
    assert running_containers() <= before


def test_a_local_gpu_endpoint_asks_docker_for_the_gpus(deployed, tmp_path):
    """Without an NVIDIA runtime (as here) Docker refuses the GPU request the endpoint container makes:
    proof that it is made. The refusal is one clear error, and no container stays behind."""
    work, _ = deployed
    before = running_containers()
    backend = LocalContainerBackend({"inference_instance_type": "local_gpu"})
    model = work / "results/deploy/model.tar.gz"
    if "nvidia" in containers.docker_client().info().get("Runtimes", {}):  # a GPU machine: it must serve
        try:
            assert backend.healthy(backend.deploy(model, "gpu-endpoint", tmp_path / "state"))
        finally:
            backend.teardown(tmp_path / "state")
    else:
        with pytest.raises(EndpointGone, match=r"(?s)capabilities: \[\[gpu\]\].*NVIDIA container runtime"):
            backend.deploy(model, "gpu-endpoint", tmp_path / "state")
    assert running_containers() <= before


def test_several_processes_train_under_the_toolkits_torchrun(tmp_path, tiny_channels_on_disk):
    """training.processes 2 in local mode: the image's training toolkit starts torchrun (its torch_distributed
    runner), gloo in the container; the metric line once per epoch, one model."""
    backend = LocalContainerBackend({"output_s3_uri": f"file://{tmp_path}/store/jobs", "metric_definitions": []})
    result = backend.train(
        "ddp-container",
        {"epochs": 2, "image_size": 32, "weights": "none", "num_workers": 0, "batch_size": 8},
        tiny_channels_on_disk,
        tmp_path / "jobs",
        REPO / "scripts",
        processes=2,
    )
    log = open(result["log"]).read()
    assert "on cpu × 2 processes" in log
    assert [
        line.split("epoch=")[1].split()[0] for line in log.splitlines() if "epoch=" in line and "train_loss=" in line
    ] == ["1", "2"]
    assert [m["epoch"] for m in result["metrics"]] == [1, 2]
    with tarfile.open(result["model_uri"][len("file://") :]) as archive:
        assert {"model.pth", "model_info.json"} <= set(archive.getnames())
