"""The real Snakemake workflow on a tiny dataset: deploy, query, redeploy after an inference.py edit,
the accuracy gate, teardown, and a dead endpoint. Runs in a scratch copy of the workflow."""

import collections
import io
import json
import os
import re
import tarfile

import numpy as np
import psutil
import pytest
import requests
import serving_contract
import yaml
from conftest import (
    REPO,
    VENV_BIN,
    assert_deployed_outputs,
    endpoint_state_dir,
    recorded_endpoints,
    snakemake,
    workflow_with_test_config,
)
from dogbreed.backends.local import LocalBackend

pytestmark = pytest.mark.e2e  # in order, on one worker (make test: --dist loadfile): the tests build on one run


def job_counts(out: str) -> dict:
    """{rule: count}: from the job stats of a plan (-n), or the jobs' own lines (✓ rule …) of a run."""
    if "Nothing to be done" in out:
        return {}
    if "Job stats:" not in out:
        return dict(collections.Counter(re.findall(r"^✓ (\w+) \(", out, re.MULTILINE)))
    table = out.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def planned_jobs(workdir, *args):
    """{rule: count} that `snakemake -n` would run."""
    return job_counts(snakemake(workdir, "-n", *args).stdout)


@pytest.fixture(scope="module")
def workdir(tiny_dataset, tmp_path_factory):
    work = workflow_with_test_config(tiny_dataset, tmp_path_factory.mktemp("workflow"))
    yield work
    for state_dir in recorded_endpoints(work):
        LocalBackend({}).teardown(state_dir)  # never leave a server running


ARGS = ("--configfile", "config/test.yaml")


def endpoint_process(workdir):
    state = json.loads((endpoint_state_dir(workdir) / "state.json").read_text())
    return state, psutil.Process(state["pid"])


@pytest.fixture(scope="module")
def deployed(workdir):
    # the default target (deploy + report) with the default, quiet terminal: what a user sees, kept for a test
    run = snakemake(workdir, *ARGS, quiet=True)
    (workdir / "terminal.txt").write_text(run.stdout + run.stderr)
    return workdir


def test_the_terminal_says_one_line_per_job(deployed):
    lines = (deployed / "terminal.txt").read_text().splitlines()
    jobs = [line for line in lines if line.startswith("✓ ")]
    said = {line.split()[1] for line in jobs}
    assert len(said) == len(jobs) and {"prepare", "tune", "train", "evaluate", "report"} <= said, lines
    assert len(lines) < 40 and max(map(len, lines)) <= 200, lines  # no banner, input lists, params dumps
    assert not any(word in line for line in lines for word in ("input:", "Job stats", "Select jobs", "Building DAG"))
    assert "[job] epoch" not in "\n".join(lines)  # the rules' own progress: in their logs
    assert "epoch=" in (deployed / "results/logs/train.log").read_text()
    assert (deployed / "results/sample.jpg").read_bytes()[:2] == b"\xff\xd8"  # the examples' image, a JPEG


def test_deploy_writes_every_output(deployed):
    results = deployed / "results"
    metrics = assert_deployed_outputs(results, backend="local")
    assert len((results / "data/manifest.csv").read_text().splitlines()) == 1 + 3 * 20
    assert json.loads((results / "data/classes.json").read_text())["2"] == "Blue_Triangle"
    assert json.loads((results / "upload.json").read_text())["sync"]["train"]["uploaded"] == 36
    assert metrics["n"] == 12 and metrics["top5_accuracy"] == 1.0
    rules = {r["rule"]: r for r in json.loads((results / "debugger/rules.json").read_text())["rules"]}
    loader = rules["Dataloader"]  # num_workers 0: judged on the wait it measured, whichever way that went
    assert loader["evidence"]["num_workers"] == 0 and loader["evidence"]["workers"] == "too few"
    assert loader["verdict"] == ("triggered" if loader["evidence"]["data_wait_percent_of_step_time"] > 10 else "ok")
    assert all(r["versus_sagemaker"] for r in rules.values())
    assert planned_jobs(deployed, *ARGS) == {}  # a complete run: nothing to redo
    assert planned_jobs(deployed, "deploy", *ARGS) == {"deploy": 1}  # but the target itself, which checks the endpoint


def test_snakemakes_report_opens_on_the_headline_numbers(deployed):
    snakemake(deployed, *ARGS, "--report", "snakemake-report.html")
    page = (deployed / "snakemake-report.html").read_text()
    metrics = json.loads((deployed / "results/evaluation/metrics.json").read_text())
    best = json.loads((deployed / "results/best_hyperparameters.json").read_text())
    headline = (deployed / "results/report/headline.tsv").read_text()
    assert (
        f"test accuracy\t{metrics['accuracy']:.4f}" in headline
        and f"best batch_size\t{best['hyperparameters']['batch_size']}" in headline
    )
    assert "Headline numbers" in page and f"{metrics['accuracy']:.4f}" in page and "No results yet" not in page
    for item in ("metrics.json", "best_hyperparameters.json", "headline.tsv"):
        assert item in page


AFTER_EVALUATION = {"evaluate": 1, "track_results": 1, "report_figures": 1, "report": 1, "all": 1}
AFTER_DEPLOY = {"package_model": 1, "start_endpoint": 1, **AFTER_EVALUATION}
AFTER_TRAINING = {"train": 1, "check_training": 1, "profiler_report": 1, **AFTER_DEPLOY}


def overlay(workdir, name, settings):
    (workdir / f"config/{name}.yaml").write_text(yaml.safe_dump(settings))
    return ("--configfile", "config/test.yaml", f"config/{name}.yaml")


def test_reruns_redo_exactly_what_a_change_touches(deployed):
    evaluation = overlay(deployed, "eval", {"evaluation": {"batch_size": 5}})
    assert planned_jobs(deployed, *evaluation) == AFTER_EVALUATION
    space = overlay(
        deployed, "space", {"tuning": {"parameters": {"lr": {"type": "continuous", "min": 0.01, "max": 0.1}}}}
    )
    assert planned_jobs(deployed, *space) == {"tune": 1, **AFTER_TRAINING}
    server = overlay(deployed, "server", {"backends": {"local": {"threads": 2}}})  # the endpoint's alone
    assert planned_jobs(deployed, *server) == {"start_endpoint": 1, **AFTER_EVALUATION}
    more_trials = overlay(deployed, "more", {"tuning": {"max_jobs": 3}})
    assert planned_jobs(deployed, *more_trials) == {"tune": 1, **AFTER_TRAINING}
    cloud = overlay(deployed, "cloud", {"backend": "sagemaker", "store": {"uri": "s3://bucket/dog-breed"}})
    assert planned_jobs(deployed, *cloud) == {"upload": 1, "tune": 1, **AFTER_TRAINING}
    everything = planned_jobs(deployed, *ARGS, "--config", "data_source=demo")
    assert everything == {"fetch": 1, "prepare": 1, "upload": 1, "sample_image": 1, "tune": 1, **AFTER_TRAINING}
    tracking = overlay(deployed, "tracking", {"tracking": {"enabled": False, "uri": "sqlite:///elsewhere.db"}})
    assert planned_jobs(deployed, *tracking) == {}  # where runs are recorded is no input of any result
    fresh = overlay(deployed, "fresh", {"backends": {"local": {"preload": False}}})
    assert planned_jobs(deployed, *fresh) == {}  # how a job starts is no input of any result either
    rehearsal = planned_jobs(deployed, *ARGS, "--config", "results_dir=results-rehearsal")
    assert rehearsal == {"prepare": 1, "upload": 1, "sample_image": 1, "tune": 1, **AFTER_TRAINING}  # downloads: shared

    module = deployed / "workflow/dogbreed/serving/evaluation.py"
    original = module.read_text()
    module.write_text(original + "\n# an edit\n")
    assert planned_jobs(deployed, *ARGS) == AFTER_EVALUATION
    module.write_text(original)  # same content again (newer mtime): nothing to redo
    assert planned_jobs(deployed, *ARGS) == {}
    module = deployed / "workflow/dogbreed/data/store.py"  # fetch imports it (an s3:// source): its inputs say so
    original = module.read_text()
    module.write_text(original + "\n# an edit\n")
    assert planned_jobs(deployed, *ARGS) == {
        "fetch": 1,
        "prepare": 1,
        "upload": 1,
        "sample_image": 1,
        "tune": 1,
        **AFTER_TRAINING,
    }
    module.write_text(original)


def test_the_readmes_first_screen_gets_a_prediction(deployed):
    """The README's first commands, as written, against this run (its folder for the demo's; make is the run)."""
    import subprocess

    readme = (REPO / "README.md").read_text()
    commands = readme.split("```bash\n", 1)[1].split("```", 1)[0].replace("results-demo/", "results/")
    script = "\n".join(line for line in commands.splitlines() if not line.startswith(("make ", "source ")))
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    said = subprocess.run(["bash", "-euc", script], cwd=deployed, capture_output=True, text=True, env=env, timeout=60)
    assert said.returncode == 0, said.stderr
    assert {p["index"] for p in json.loads(said.stdout)["predictions"][0]} == {0, 1, 2}
    assert "make demo" in commands and "make teardown" in commands and "curl --fail-with-body" in commands


def test_the_live_endpoint_answers(deployed):
    url = json.loads((deployed / "results/endpoint.json").read_text())["url"]
    assert requests.get(f"{url}/ping", timeout=5).status_code == 200
    image = next((deployed / "results/data/channels/test/001.Red_Circle").iterdir()).read_bytes()
    answer = requests.post(f"{url}/invocations", data=image, headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert answer.status_code == 200
    assert {p["index"] for p in answer.json()["predictions"][0]} == {0, 1, 2}
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 3, 32, 32), dtype=np.float32))
    batch = requests.post(
        f"{url}/invocations", data=buffer.getvalue(), headers={"Content-Type": "application/x-npy"}, timeout=30
    )
    assert len(batch.json()["predictions"]) == 2
    bad = requests.post(f"{url}/invocations", data=b"??", headers={"Content-Type": "application/x-npy"}, timeout=30)
    assert bad.status_code == 400 and "npy" in bad.json()["error"]


def test_concurrent_requests_are_batched_yet_each_gets_its_own_answer(deployed):
    """The local server batches concurrent requests (backends.local.max_batch_size, on by default):
    mixed content types, answer types and bad requests at once get exactly their answers alone."""
    url = json.loads((deployed / "results/endpoint.json").read_text())["url"]
    image = next((deployed / "results/data/channels/test/001.Red_Circle").iterdir()).read_bytes()
    assert serving_contract.concurrent_mixed_requests(url, image, 32) == []


def test_client_mistakes_get_a_4xx_with_a_one_line_json_error(deployed):
    url = json.loads((deployed / "results/endpoint.json").read_text())["url"]
    image = next((deployed / "results/data/channels/test/001.Red_Circle").iterdir()).read_bytes()
    for what, content_type, body, accept, status in serving_contract.bad_requests(image, 32):
        answer = serving_contract.post(url, content_type, body, accept)
        assert answer.status_code == status, (what, answer.status_code, answer.text[:300])
        assert set(json.loads(serving_contract.first_line(answer))) == {"error"}, what


def test_no_hostile_request_gets_a_5xx_or_internals(deployed):
    """A bounded fuzz (300 requests) of what a careless or hostile client sends, against the live server."""
    url = json.loads((deployed / "results/endpoint.json").read_text())["url"]
    image = next((deployed / "results/data/channels/test/001.Red_Circle").iterdir()).read_bytes()
    cases = serving_contract.hostile_requests(image, 32)
    assert len(cases) >= 300
    statuses = {}
    for what, content_type, body, accept in cases:
        answer = serving_contract.post(url, content_type, body, accept)
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, (what, answer.status_code, answer.text[:300])
        if answer.status_code >= 400:
            assert set(json.loads(serving_contract.first_line(answer))) == {"error"}, (what, answer.text[:300])
            assert "Traceback" not in answer.text and "Error:" not in answer.text, (what, answer.text[:300])
    assert statuses.get(200, 0) >= 10 and {400, 406, 413, 415} <= set(statuses)
    assert requests.get(url + "/ping", timeout=5).status_code == 200  # still serving


def test_slow_clients_hold_no_one_else_up(deployed):
    """Three connections sending their headers a byte at a time and one slow body stay open, while /ping
    and a real request are answered at once; an idle connection is closed (channel_timeout: 3 s here)."""
    import socket
    import time

    url = json.loads((deployed / "results/endpoint.json").read_text())["url"]
    host, port = url.rsplit("/", 1)[1].rsplit(":", 1)
    image = next((deployed / "results/data/channels/test/001.Red_Circle").iterdir()).read_bytes()
    slow = []
    try:
        for _ in range(3):  # slowloris: headers that never end
            connection = socket.create_connection((host, int(port)), timeout=10)
            connection.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(connection)
        body = socket.create_connection((host, int(port)), timeout=10)  # a body that never arrives
        body.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n"
            + image[:10]
        )
        slow.append(body)
        for connection in slow:
            connection.sendall(b"a")  # still trickling
        started = time.perf_counter()
        assert requests.get(url + "/ping", timeout=10).status_code == 200
        answer = requests.post(url + "/invocations", data=image, headers={"Content-Type": "image/jpeg"}, timeout=10)
        assert answer.status_code == 200, answer.text[:300]
        served_in = time.perf_counter() - started
        print(f"with 4 slow clients open: /ping + one invocation answered in {served_in * 1000:.0f} ms")
        # an idle client is let go: its connection closed by the server, no thread ever held
        slow[0].settimeout(30)  # channel_timeout 3 s, checked every 5 s: closed well within this
        try:
            closed = slow[0].recv(100) == b""
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
        assert closed, "the server kept an idle, half-sent request open"
    finally:
        for connection in slow:
            connection.close()


def test_the_sagemaker_sdks_own_clients_work_against_it(deployed):
    """Notebooks written for SageMaker: LocalSession (serving_port = our port), its runtime client and the SDK's
    serializers."""
    port = int(json.loads((deployed / "results/endpoint.json").read_text())["url"].rsplit(":", 1)[1])
    image = next((deployed / "results/data/channels/test/003.Blue_Triangle").iterdir()).read_bytes()
    answers = serving_contract.sdk_predictions(port, image, 32)
    classes = {"Red_Circle", "Green_Square", "Blue_Triangle"}
    assert answers["json"][0][0]["breed"] in classes and answers["image"] == answers["json"]
    assert answers["npy"].shape == (3, 3) and np.allclose(answers["npy"].sum(axis=1), 1, atol=1e-4)


def test_the_accuracy_gate_keeps_the_metrics(deployed):
    assert planned_jobs(deployed, "deploy", *ARGS, "--config", "min_accuracy=0.5") == {"accuracy_gate": 1, "deploy": 1}
    accuracy = json.loads((deployed / "results/evaluation/metrics.json").read_text())["accuracy"]
    result = snakemake(deployed, "deploy", *ARGS, "--config", "min_accuracy=1.0", check=False)
    if accuracy < 1.0:
        assert result.returncode != 0
        assert f"test accuracy {accuracy:.4f}, min_accuracy 1.0" in result.stdout + result.stderr
    else:
        assert result.returncode == 0
    assert (deployed / "results/evaluation/metrics.json").exists()
    snakemake(deployed, "deploy", *ARGS, "--config", "min_accuracy=0")
    assert "passed" in (deployed / "results/evaluation/accuracy_gate.txt").read_text()


def test_a_training_rule_can_stop_the_run_and_its_evidence_stays(deployed):
    # A healthy tiny run triggers no rule: its verdicts say one did (Dataloader), with the file's
    # timestamp kept, so nothing but the gate sees a change; put back afterwards.
    verdicts = deployed / "results/debugger/rules.json"
    original, stat = verdicts.read_text(), verdicts.stat()
    rules = json.loads(original)
    next(r for r in rules["rules"] if r["rule"] == "Dataloader")["verdict"] = "triggered"
    verdicts.write_text(json.dumps(rules))
    os.utime(verdicts, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    try:
        (deployed / "config/stop.yaml").write_text(yaml.safe_dump({"profiling": {"stop_on": ["Dataloader"]}}))
        stop = ("--configfile", "config/test.yaml", "config/stop.yaml")
        assert planned_jobs(deployed, "deploy", *stop) == {"training_gate": 1, "deploy": 1}
        result = snakemake(deployed, "deploy", *stop, check=False)
        assert (
            result.returncode != 0
            and "training rules set to stop the run triggered: Dataloader" in result.stdout + result.stderr
        )
        assert verdicts.exists() and (deployed / "results/profiler/profiler-report.html").exists()
    finally:
        verdicts.write_text(original)
        os.utime(verdicts, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_an_inference_edit_redeploys_without_retraining(deployed):
    old_state, old_process = endpoint_process(deployed)
    trained_at = (deployed / "results/training/model.tar.gz").stat().st_mtime_ns
    handler = deployed / "scripts/inference.py"
    handler.write_text(
        handler.read_text().replace(
            'json.dumps({"predictions": predictions}', 'json.dumps({"predictions": predictions, "edited": True}'
        )
    )
    assert planned_jobs(deployed, *ARGS) == AFTER_DEPLOY
    redeploy = snakemake(deployed, *ARGS)
    took, summary = re.search(
        r"=== dog-breed run \((\d+) s\) ===(.*)", redeploy.stdout + redeploy.stderr, re.DOTALL
    ).groups()
    assert 0 < int(took) < 600  # the run's wall time, as make demo prints it
    assert "test accuracy" in summary and "best hyperparameters" in summary and "report: results/report.html" in summary
    assert (  # this run's options
        "(stop it: snakemake teardown --configfile config/test.yaml; every endpoint this checkout started: "
        "snakemake endpoints --configfile config/test.yaml)"
    ) in summary
    new_state, _new_process = endpoint_process(deployed)
    assert new_state["pid"] != old_state["pid"] and not old_process.is_running()
    assert (deployed / "results/training/model.tar.gz").stat().st_mtime_ns == trained_at
    image = next((deployed / "results/data/channels/test/002.Green_Square").iterdir()).read_bytes()
    answer = requests.post(
        f"{new_state['url']}/invocations", data=image, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert answer.json()["edited"] is True


def test_a_corrupt_artifact_leaves_the_live_endpoint_serving(deployed):
    """Deploy is transactional: the new artifact is unpacked and its model loaded before the endpoint serving now is
    touched; a bad one is one line naming the file and the command that remakes it."""
    state, process = endpoint_process(deployed)
    state_dir = endpoint_state_dir(deployed)
    artifact = deployed / "results/deploy/model.tar.gz"
    whole = artifact.read_bytes()
    artifact.write_bytes(whole[: len(whole) // 2])
    try:
        bad = snakemake(deployed, "deploy", "--forcerun", "start_endpoint", *ARGS, check=False, quiet=True)
        output = bad.stdout + bad.stderr
        assert bad.returncode != 0 and "results/deploy/model.tar.gz cannot be read" in output
        assert "snakemake deploy --forcerun package_model --configfile config/test.yaml" in output
        assert "Traceback" not in output
        # the rule's reason and its log are the last lines on screen: no restatement by Snakemake after them
        last = bad.stderr.strip().splitlines()[-2:]
        assert last[0].startswith("error in rule start_endpoint: results/deploy/model.tar.gz cannot be read"), last
        assert last[1] == "rule start_endpoint failed; its log: results/logs/start_endpoint.log", last
        assert process.is_running() and requests.get(state["url"] + "/ping", timeout=5).status_code == 200
        # with nothing serving, the check runs beside the new server's start: the same line, and no server left
        snakemake(deployed, "teardown", *ARGS)
        again = snakemake(deployed, "deploy", "--forcerun", "start_endpoint", *ARGS, check=False, quiet=True)
        assert again.returncode != 0 and "Traceback" not in again.stdout + again.stderr
        assert (
            again.stderr.strip()
            .splitlines()[-2]
            .startswith("error in rule start_endpoint: results/deploy/model.tar.gz cannot be read")
        )
        assert not (state_dir / "state.json").exists()
        # a model that does not load (the artifact reads, its weights do not fit): the server it started is stopped
        with tarfile.open(fileobj=io.BytesIO(whole)) as archive, tarfile.open(artifact, "w:gz") as broken:
            for member in archive.getmembers():
                data = archive.extractfile(member) if member.isfile() else None
                if member.name == "model.pth":
                    data, member.size = io.BytesIO(b"not weights"), len(b"not weights")
                broken.addfile(member, data)
        again = snakemake(deployed, "deploy", "--forcerun", "start_endpoint", *ARGS, check=False, quiet=True)
        assert again.returncode != 0 and "Traceback" not in again.stdout + again.stderr
        assert "results/deploy/model.tar.gz does not load with its code/inference.py" in again.stderr
        assert not (state_dir / "state.json").exists()
        assert not [
            p
            for p in psutil.process_iter(["cmdline", "cwd"])
            if "waitress" in " ".join(p.info["cmdline"] or []) and str(deployed) in (p.info["cwd"] or "")
        ]
    finally:
        # the hinted remake, with the default target: the run whole again (its report too) for the tests after this
        snakemake(deployed, "--forcerun", "package_model", *ARGS)
    assert requests.get(json.loads((deployed / "results/endpoint.json").read_text())["url"] + "/ping", timeout=5).ok


def test_teardown_stops_the_endpoint_and_deploy_brings_it_back(deployed):
    state, process = endpoint_process(deployed)
    evaluated_at = (deployed / "results/evaluation/metrics.json").stat().st_mtime_ns
    description = deployed / "results/endpoint.json"
    described = (json.loads(description.read_text())["started_at"], description.stat().st_mtime_ns)
    other = snakemake(deployed, "teardown", *ARGS, "--config", "results_dir=results-other")  # another run's options
    assert "no endpoint of this run" in other.stdout + other.stderr and process.is_running()
    assert (
        f"not touched: {state['endpoint_name']} (local, {state['url']}, results in results); "
        "stop it: snakemake teardown --configfile config/test.yaml"
    ) in other.stdout + other.stderr

    # every endpoint this checkout started, whichever options ask: its age and the command that stops it
    listed = snakemake(deployed, "endpoints", *ARGS, "--config", "results_dir=results-other")
    assert re.search(
        rf"{state['endpoint_name']} \(local, {state['url']}, up \d+ min, results in results\); "
        r"stop it: snakemake teardown --configfile config/test.yaml",
        listed.stdout + listed.stderr,
    ), listed.stdout + listed.stderr

    result = snakemake(deployed, "teardown", *ARGS)
    assert "stopped: dogbreed-" in result.stdout + result.stderr
    assert not process.is_running() and not (deployed / ".dogbreed/endpoints" / state["endpoint_name"]).exists()
    none = snakemake(deployed, "endpoints", *ARGS)
    assert "no endpoint of this checkout is running" in none.stdout + none.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(state["url"] + "/ping", timeout=5)
    assert planned_jobs(deployed, "report", *ARGS) == {}  # the report never starts an endpoint

    # the plain target brings it back from the served artifact, at its address, and reruns nothing else
    back = snakemake(deployed, "deploy", *ARGS)
    assert f"{state['endpoint_name']} at {state['url']} was torn down: bringing it back" in back.stdout + back.stderr
    assert job_counts(back.stdout + back.stderr) == {"deploy": 1}
    assert requests.get(state["url"] + "/ping", timeout=5).status_code == 200
    assert (deployed / "results/evaluation/metrics.json").stat().st_mtime_ns == evaluated_at
    # endpoint.json says when the endpoint serving now started, its time stamp kept (nothing reruns for it)
    assert json.loads(description.read_text())["started_at"] > described[0]
    assert description.stat().st_mtime_ns == described[1]
    _revived, process = endpoint_process(deployed)
    process.kill()  # died: the same again
    process.wait(10)
    back = snakemake(deployed, "deploy", *ARGS)
    assert f"{state['endpoint_name']} at {state['url']} does not answer: bringing it back" in back.stdout + back.stderr
    assert requests.get(state["url"] + "/ping", timeout=5).status_code == 200
    assert job_counts(back.stdout + back.stderr) == {"deploy": 1}  # it alone ran

    # evaluate itself finding the endpoint dead brings it back at its address first, then evaluates
    endpoint_process(deployed)[1].kill()
    again = snakemake(deployed, "deploy", *ARGS, "--forcerun", "evaluate")
    said = again.stdout + again.stderr
    assert f"{state['endpoint_name']} at {state['url']} does not answer: bringing it back" in said
    assert job_counts(said)["evaluate"] == 1 and "Traceback" not in said
    assert requests.get(state["url"] + "/ping", timeout=5).status_code == 200
    assert not (deployed / "results/evaluation/answers-so-far.jsonl").exists()  # kept only until it is complete


def test_teardown_finds_the_endpoint_after_results_are_deleted(deployed):
    """Last: it deletes the results. The endpoint's record lives outside them."""
    import shutil

    state, process = endpoint_process(deployed)
    shutil.rmtree(deployed / "results")
    result = snakemake(deployed, "teardown", *ARGS)
    assert f"stopped: {state['endpoint_name']}" in result.stdout + result.stderr and not process.is_running()
    assert not list((deployed / ".dogbreed/endpoints").iterdir())
