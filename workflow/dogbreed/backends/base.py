"""The backend interface: the only way rules reach a training or serving platform (docs/architecture.md §1)."""

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import job_contract as contract

from dogbreed.backends.errors import EndpointGone, EndpointRefused, EndpointUnavailable

# What a live endpoint is, kept outside Snakemake's outputs (docs/architecture.md §4): deploy writes it before
# waiting for the endpoint, so teardown can always find what was started.
STATE_FILE = "state.json"

# SageMaker's inference toolkit under TorchServe serves one request at a time: its transformer decodes
# every request of a TorchServe batch with the first request's Content-Type and Accept
# (context.request_processor[0]), sets only the first answer's type, and turns one request's error into
# an error for the whole batch (it once dropped all but the first: sagemaker-pytorch-inference-toolkit
# #121). Batching there would let one client's request break another's, so the containers keep batch
# size 1, said outright; the local server batches safely (dogbreed/serving/server.py).
TOOLKIT_SERVING_ENVIRONMENT = {"SAGEMAKER_TS_BATCH_SIZE": "1", "SAGEMAKER_TS_MAX_BATCH_DELAY": "100"}


def write_endpoint_state(state_dir, state: dict):
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    (Path(state_dir) / STATE_FILE).write_text(json.dumps(state, indent=2))


def read_endpoint_state(state_dir):
    """The recorded endpoint, or None when none is recorded."""
    path = Path(state_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def forget_endpoint_state(state_dir):
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)


def ping(url) -> bool:
    """True when an endpoint under the SageMaker serving contract answers GET /ping with 200."""
    import requests

    try:
        return requests.get(url + "/ping", timeout=5).status_code == 200
    except requests.RequestException:
        return False


# what a busy or (re)starting server answers (TorchServe's 503 while its worker loads the model, a proxy's 502/504)
BUSY_STATUSES = (429, 502, 503, 504)


def post_invocation(url, body: bytes, content_type: str, accept=contract.JSON) -> bytes:
    """POST /invocations; a non-200 answer raises with its status and the start of its body: EndpointUnavailable
    when sending it again may work (no connection, a busy or restarting server), else EndpointRefused."""
    import requests

    try:
        response = requests.post(
            url + "/invocations", data=body, timeout=300, headers={"Content-Type": content_type, "Accept": accept}
        )
    except (requests.ConnectionError, requests.Timeout) as error:
        raise EndpointUnavailable(f"endpoint {url} did not answer ({type(error).__name__})") from None
    if response.status_code in BUSY_STATUSES:
        raise EndpointUnavailable(f"endpoint {url} answered {response.status_code} ({response.text[:200].strip()})")
    if response.status_code != 200:
        raise EndpointRefused(
            f"endpoint {url} answered {response.status_code} to a request of {len(body):,} bytes "
            f"({content_type}): {response.text[:500]}"
        )
    return response.content


class Backend:
    name = "base"

    def approve_run(self, plan: str, costs: list, store_uri: str):
        """Before the run's first side effect (the upload), with the run plan (run_plan.py, whose refusals
        came before): nothing to pay on this machine; the cloud backend shows the plan, prices it and asks
        for confirm_cloud."""

    def upload(self, local_dir, uri) -> dict:
        """Mirror a local folder to the store; returns {"uri", "uploaded", "unchanged", "removed"}."""
        raise NotImplementedError

    def prepare_jobs(self):
        """Called by a rule that will run jobs, before its own setup: start what its jobs need, so the two overlap
        (the local backend's job launcher imports torch meanwhile). Nothing by default."""

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
        """Run a training job; returns {"job_name", "status", "model_uri", "metrics", "log", ...}.

        environment: variables for the job's process where it shares this machine (the local backend:
        a tuning trial's GPU or share of the CPU threads); a job on an instance of its own has them all.
        processes (training.processes): more than 1 trains with DDP, started by torchrun (or SageMaker's
        torch_distributed launcher); instances: the final training's instance_count (a cloud job's)."""
        raise NotImplementedError

    def tune(
        self,
        spec,
        fixed_hyperparameters,
        channels,
        jobs_dir,
        source_dir,
        tuning_name,
        study_db,
        parallel=1,
        tracking=None,
    ):
        """Run the tuning spec; returns (trials table rows, best trial).

        The default is the project's own tuner (Optuna, docs/architecture.md §1): every trial is a training job
        of this backend, its objective read from the job's log lines. SageMaker overrides it with
        a tuning job of its own. tracking (tracking.TrialTracking): every trial an MLflow run.
        """
        from dogbreed.tuning import trial_jobs

        return trial_jobs.tune(
            self, spec, fixed_hyperparameters, channels, jobs_dir, source_dir, tuning_name, study_db, parallel, tracking
        )

    def deploy(self, model_tar, endpoint_name, state_dir) -> dict:
        """Bring up an endpoint serving model_tar; returns the endpoint's description."""
        raise NotImplementedError

    def revive(self, endpoint, model_tar, state_dir) -> dict:
        """Bring back a recorded endpoint that no longer serves: model_tar again, under the same name
        and address, so that its evaluation and its clients still hold."""
        return self.deploy(model_tar, endpoint["endpoint_name"], state_dir)

    def healthy(self, endpoint) -> bool:
        raise NotImplementedError

    def request_limit(self, endpoint):
        """The most bytes a request to the endpoint may have, where the platform sets one (None: no limit of its
        own; evaluation.max_request_bytes applies either way)."""
        return

    def invoke(self, endpoint, body: bytes, content_type: str, accept=contract.JSON) -> bytes:
        raise NotImplementedError

    def teardown(self, state_dir) -> list:
        """Stop what deploy started; returns descriptions of what was stopped."""
        raise NotImplementedError


class HttpEndpointBackend(Backend):
    """A backend whose endpoint this machine serves on a local URL under the SageMaker serving
    contract (local: waitress; local_container: the inference image)."""

    def healthy(self, endpoint) -> bool:
        return ping(endpoint["url"])

    def revive(self, endpoint, model_tar, state_dir) -> dict:
        # the same address: the port the endpoint had, whatever the settings say
        self.settings = {**self.settings, "port": urlsplit(endpoint["url"]).port}
        return super().revive(endpoint, model_tar, state_dir)

    def invoke(self, endpoint, body: bytes, content_type: str, accept=contract.JSON) -> bytes:
        return post_invocation(endpoint["url"], body, content_type, accept)

    def teardown(self, state_dir) -> list:
        """Stop the server recorded in state_dir/state.json, if it still runs; returns what was stopped."""
        state = read_endpoint_state(state_dir)
        if state is None:
            return []
        stopped = self.stop_server(state, Path(state_dir))
        forget_endpoint_state(state_dir)
        return stopped

    def stop_server(self, state, state_dir: Path) -> list:
        """Stop the recorded server if it still runs; descriptions of what was stopped."""
        raise NotImplementedError

    def wait_until_serving(self, state, state_dir, timeout, died, last_lines, ready=ping, pause=0.3) -> dict:
        """Poll until ready(url); the endpoint's description. died() says how the server ended (None while
        it runs), last_lines() the end of its log: either failure tears it down and says both."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if (how := died()) is not None:
                lines = last_lines()  # before teardown removes what holds them
                self.teardown(state_dir)
                raise EndpointGone(f"the endpoint at {state['url']} {how} at start; the end of its log:\n{lines}")
            if ready(state["url"]):
                return {k: state[k] for k in ("backend", "endpoint_name", "url", "model", "started_at")}
            time.sleep(pause)
        lines = last_lines()
        self.teardown(state_dir)
        raise EndpointGone(
            f"the endpoint at {state['url']} was not ready within {timeout:g} s; the end of its log:\n{lines}"
        )
