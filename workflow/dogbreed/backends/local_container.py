"""The `local_container` backend: SageMaker's local mode, the cloud's containers under Docker here.

Training and tuning trials are local-mode training jobs: the CreateTrainingJob request the `sagemaker` backend
sends (sagemaker_jobs.py), handed to the SDK's local-mode client (sagemaker-core's LocalSession), which runs it under
docker-compose; the framework image's training toolkit runs scripts/train.py under the real training contract.
Local mode has no tuning jobs, so the project's own tuner runs one local-mode job per trial.

The endpoint is the framework's inference image run detached under the SageMaker serving contract
(model at /opt/ml/model, `serve`, port 8080 published on 127.0.0.1): the SDK's own local endpoint
is a `docker-compose up` owned by the process that deploys, which would stop with the Snakemake job,
and the endpoint must outlive it (docs/architecture.md §4). Its container id is in the endpoint state file.

Nothing here needs an AWS account: the session gets a region, placeholder credentials (unless the
store is S3) and telemetry off, so local mode never contacts AWS for a file:// store.
"""

import contextlib
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import job_contract as contract

from dogbreed.backends import containers, sagemaker_jobs
from dogbreed.backends.base import TOOLKIT_SERVING_ENVIRONMENT, HttpEndpointBackend, ping, write_endpoint_state
from dogbreed.backends.errors import EndpointGone, JobFailed, JobInterrupted
from dogbreed.data import store
from dogbreed.runtime import naming, run_guard
from dogbreed.runtime.rule_runner import say

# the SDK's defaults config with only its telemetry off
TELEMETRY_OFF = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
SERVING_PORT = 8080  # the SageMaker serving contract's port inside the container
LABEL = "dogbreed.endpoint"
COMPOSE_WORKING_DIR = "com.docker.compose.project.working_dir"  # docker-compose labels its containers


def _tail(text: str, lines=25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _remove_job_containers(client, container_root, log_path=None):
    """Remove the containers of the local-mode jobs whose compose projects live under container_root
    (other jobs', a parallel trial's among them, stay): docker-compose leaves them behind, exited,
    after every job, and running when the SDK's process is interrupted. Their output goes to log_path
    first: the SDK's own stream of it stops reading when compose exits, dropping the last lines."""
    found = [
        c
        for c in client.containers.list(all=True, filters={"label": COMPOSE_WORKING_DIR})
        if Path(c.labels[COMPOSE_WORKING_DIR]).is_relative_to(container_root)
    ]
    import docker

    if log_path is not None:
        Path(log_path).write_bytes(b"".join(c.logs() for c in found))
    for container in found:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:  # removed meanwhile (a stopped trial's, by its own watch)
            pass


class _QuietThreads:
    """sys.stdout, less what the threads in `quiet` write: local mode prints a job's container output as it comes,
    whatever logs says, and the job's log.txt gets it whole afterwards. Trials run in threads of one process, so
    one job's quiet must not silence another's."""

    def __init__(self, stream):
        self.stream, self.quiet = stream, set()

    def write(self, text):
        return len(text) if threading.get_ident() in self.quiet else self.stream.write(text)

    def __getattr__(self, name):  # flush, fileno, isatty …: the stream's
        return getattr(self.stream, name)


_QUIET_SETUP = threading.Lock()


@contextlib.contextmanager
def _quiet(wanted: bool):
    """This thread's writes to sys.stdout dropped while wanted (backends.local_container.logs: None)."""
    if not wanted:
        yield
        return
    with _QUIET_SETUP:  # trials start together: one wrapper for them all
        if not isinstance(sys.stdout, _QuietThreads):
            sys.stdout = _QuietThreads(sys.stdout)
        wrapper = sys.stdout
    wrapper.quiet.add(threading.get_ident())
    try:
        yield
    finally:  # the wrapper it joined, even where sys.stdout was put back meanwhile (a stopped rule)
        wrapper.quiet.discard(threading.get_ident())


def _handler_answers(url) -> bool:
    """TorchServe answers /ping before its model worker has loaded the model: ready is when a request
    reaches inference.py, which refuses an empty instance list with its own 400."""
    import requests

    try:
        answer = requests.post(
            url + "/invocations", data=b'{"instances": []}', timeout=10, headers={"Content-Type": contract.JSON}
        )
        return answer.status_code == 400 and answer.text.startswith('{"error"')
    except requests.RequestException:
        return False


class LocalContainerBackend(HttpEndpointBackend):
    name = "local_container"
    _study_root = None  # while tune() runs: the folder under which its trials keep their compose folders

    def __init__(self, settings: dict):
        self.settings = containers.local_mode_settings(settings)

    # --- session: local mode, no AWS account ----------------------------------------------------
    def local_session(self, container_root=None):
        """The SDK's LocalSession with a region, and placeholder credentials for a file:// store (local mode
        wants some to hand to the containers; they reach nothing). container_root: where local mode
        keeps a job's compose file and folders (its own per job, so its containers can be found)."""
        import boto3
        from sagemaker.core.local.local_session import LocalSession

        s = self.settings
        uses_s3 = str(s.get("output_s3_uri", "")).startswith("s3://")  # <store.uri>/jobs unless set
        credentials = {} if uses_s3 else {"aws_access_key_id": "local-mode", "aws_secret_access_key": "local-mode"}
        boto_session = boto3.session.Session(region_name=s["region"], **credentials)
        # the SDK's defaults config in place of ~/.config/sagemaker/config.yaml (local mode takes none of it): telemetry
        # off, or LocalSession would call sts:GetCallerIdentity and send a request to AWS about each job
        session = LocalSession(boto_session=boto_session, sagemaker_config=TELEMETRY_OFF)
        session.config = {
            "local": {"local_code": True, **({"container_root": str(container_root)} if container_root else {})}
        }
        return session

    def upload(self, local_dir, uri) -> dict:
        return store.sync(local_dir, uri)

    def _role(self):
        return self.settings.get("role") or "arn:aws:iam::111111111111:role/local-mode-needs-no-role"

    def _gpu(self, key):
        return self.settings.get(key) == "local_gpu"

    def _ready(self, scope, gpu):
        """The engine answers and the image is here, or one clear error (only when a job is about to run:
        dry runs and workflow parsing never need Docker)."""
        client = containers.docker_client()
        uri = containers.image_uri(self.settings, scope, gpu)
        containers.require_image(client, uri)
        return client, uri

    def refuse_shape(self, hyperparameters, processes, instances):
        sagemaker_jobs.refuse_job_shape(self.name, self.settings, hyperparameters, processes, instances)

    def training_request(
        self,
        job_name,
        hyperparameters,
        channels,
        code_uri,
        entry_point="train.py",
        environment=None,
        processes=1,
        instances=1,
    ) -> dict:
        """The `sagemaker` backend's CreateTrainingJob request, for one container of the local image. code_uri: the
        code's folder (file://), which local mode mounts; a file:// output goes under the job's own folder, as
        SageMaker and local mode's S3 upload lay it out (local mode would copy every job's model.tar.gz into one)."""
        s = self.settings
        encoded = sagemaker_jobs.toolkit_hyperparameters(
            hyperparameters,
            job_name=job_name,
            entry_point=entry_point,
            code_uri=code_uri,
            region=s["region"],
            processes=processes,
            cpu_processes=not self._gpu("instance_type"),
        )
        output = s["output_s3_uri"]
        return sagemaker_jobs.training_job_request(
            s,
            job_name=job_name,
            image=containers.image_uri(s, "training", self._gpu("instance_type")),
            instance_type="local_gpu" if self._gpu("instance_type") else "local",
            instances=instances,
            environment=environment,
            definition=sagemaker_jobs.job_definition(
                s,
                role=self._role(),
                hyperparameters=encoded,
                channels=channels,
                output_uri=store.join(output, job_name, "output") if output.startswith("file://") else output,
            ),
        )

    def train(
        self,
        job_name,
        hyperparameters,
        channels,
        jobs_dir,
        source_dir,
        entry_point="train.py",
        on_line=None,
        echo=True,
        keep_model=True,
        environment=None,
        processes=1,
        instances=1,
    ) -> dict:
        self.refuse_shape(hyperparameters, processes, instances)  # before Docker is asked: no engine would hide it
        client, _ = self._ready("training", self._gpu("instance_type"))
        started = time.time()
        # of the environment, only what a container can use: its MLflow run (a trial's share of this machine's
        # CPUs and GPUs is the container's to take)
        tracked = {k: v for k, v in (environment or {}).items() if k.startswith("MLFLOW_") or k == "DO_NOT_TRACK"}
        code_uri = store.file_uri(Path(source_dir).resolve())
        request = self.training_request(job_name, hyperparameters, channels, code_uri, entry_point, tracked, processes)
        # the job's own compose folder, so that its containers (named at random) can be found
        container_root = Path(
            tempfile.mkdtemp(prefix=f"dogbreed-local-mode-{job_name}-", dir=self._study_root)
        ).resolve()
        local = self.local_session(container_root).sagemaker_client
        log_path = Path(jobs_dir).resolve() / job_name / "log.txt"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        failure, ended = None, threading.Event()

        def stop_when_asked():  # a signal reaches only the main thread: a parallel trial's containers stop here
            while not ended.wait(0.5):
                if run_guard.stopping.is_set():  # again until the job returns: compose may not have made them yet
                    with contextlib.suppress(Exception):  # the engine busy or gone: the next round, or the job's end
                        _remove_job_containers(client, container_root)

        threading.Thread(target=stop_when_asked, daemon=True).start()
        with run_guard.job_running(f"local-mode training job {job_name}"):
            try:  # local mode prints the container's output as it comes; log.txt gets it whole afterwards
                with _quiet(self.settings.get("logs", "All") == "None"):
                    local.create_training_job(**request)
            except Exception as error:
                failure = error
            finally:  # also on Ctrl-C, or Snakemake stopping the rule, when docker-compose would go on
                ended.set()
                try:
                    _remove_job_containers(client, container_root, log_path)
                except Exception as error:  # the engine went away: say so, keep the job's own outcome
                    say(f"could not collect or remove the containers of {job_name}: {error}")
                shutil.rmtree(container_root, ignore_errors=True)  # what the containers wrote as root may stay
            if failure is not None and run_guard.stopping.is_set():
                raise JobInterrupted(f"local-mode training job {job_name} stopped")
        if failure is not None:
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            raise JobFailed(
                f"local-mode training job {job_name} failed: {failure}; last lines of {log_path}:\n{_tail(log)}"
            ) from failure
        # the job's hyperparameters as given (the request's are JSON-encoded for the toolkit)
        description = local.describe_training_job(TrainingJobName=job_name)
        description["HyperParameters"] = hyperparameters
        result = sagemaker_jobs.collect(self.name, job_name, description, jobs_dir, on_line, keep_model, started)
        return {**result, "log": str(log_path)}

    def tune(self, spec, fixed_hyperparameters, *args, **kwargs):
        # Check once, before Optuna: it would record these problems as failed trials, and a rerun would
        # find none left to run.
        self.refuse_shape(fixed_hyperparameters, processes=1, instances=1)
        client, _ = self._ready("training", self._gpu("instance_type"))
        # every trial's compose folder under one root, so that an interrupted study stops them all
        self._study_root = Path(tempfile.mkdtemp(prefix="dogbreed-local-mode-study-")).resolve()
        try:
            return super().tune(spec, fixed_hyperparameters, *args, **kwargs)
        finally:  # trials run in threads: on Ctrl-C or a stopped rule, stop the others' containers too
            _remove_job_containers(client, self._study_root)
            shutil.rmtree(self._study_root, ignore_errors=True)
            self._study_root = None

    # --- the endpoint: the inference image, detached ----------------------------------------------
    def deploy(self, model_tar, endpoint_name, state_dir) -> dict:
        import docker

        gpu = self._gpu("inference_instance_type")
        client, image = self._ready("inference", gpu)
        state_dir = Path(state_dir).resolve()
        self.teardown(state_dir)
        model_dir = state_dir / "model"  # /opt/ml/model, as SageMaker unpacks model.tar.gz there
        shutil.rmtree(model_dir, ignore_errors=True)
        model_dir.mkdir(parents=True)
        with tarfile.open(model_tar) as archive:
            archive.extractall(model_dir, filter="data")
        for stale in client.containers.list(all=True, filters={"label": f"{LABEL}={endpoint_name}"}):
            stale.remove(force=True)  # a container whose state file was lost
        host = self.settings.get("host", "127.0.0.1")
        container = client.containers.create(
            image,
            "serve",
            name=naming.container_name(endpoint_name),
            labels={LABEL: endpoint_name},
            ports={f"{SERVING_PORT}/tcp": (host, int(self.settings.get("port", 0)) or None)},
            volumes={str(model_dir): {"bind": "/opt/ml/model", "mode": "ro"}},
            environment={
                "SAGEMAKER_PROGRAM": "inference.py",
                "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                "SAGEMAKER_REGION": self.settings["region"],
                "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                **TOOLKIT_SERVING_ENVIRONMENT,
            },
            device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else None,
        )
        try:
            container.start()
        except docker.errors.APIError as error:  # e.g. no GPU runtime, or the configured port is taken
            container.remove(force=True)
            hint = " (local_gpu needs an NVIDIA GPU and the NVIDIA container runtime)" if gpu else ""
            raise EndpointGone(f"Docker could not start the endpoint container: {error.explanation}{hint}") from None
        container.reload()
        port = container.ports[f"{SERVING_PORT}/tcp"][0]["HostPort"]
        url = f"http://{host}:{port}"
        state = {
            "backend": self.name,
            "endpoint_name": endpoint_name,
            "url": url,
            "container_id": container.id,
            "image": image,
            "model": str(Path(model_tar).resolve()),
            "log": str(state_dir / "server.log"),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_endpoint_state(state_dir, state)

        def died():
            container.reload()
            return None if container.status != "exited" else f"exited (container {container.short_id})"

        return self.wait_until_serving(
            state,
            state_dir,
            float(self.settings.get("startup_timeout", 180)),
            died,
            last_lines=lambda: _tail(container.logs().decode(errors="replace")),
            ready=lambda url: ping(url) and _handler_answers(url),
            pause=1,
        )

    def stop_server(self, state, state_dir) -> list:
        """Stop and remove the recorded container; its output is kept in the log."""
        import docker

        stopped = []
        try:
            client = containers.docker_client()
        except containers.EngineNotRunning:  # no engine: no container of it runs
            client = None
        if client is not None:
            try:
                container = client.containers.get(state["container_id"])
                container.stop(timeout=10)
                Path(state["log"]).write_bytes(container.logs())
                container.remove(force=True)
                stopped.append(f"{state['endpoint_name']} ({state['url']}, container {state['container_id'][:12]})")
            except docker.errors.NotFound:
                pass
        shutil.rmtree(state_dir / "model", ignore_errors=True)
        return stopped
