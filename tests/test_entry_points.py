"""scripts/train.py and scripts/inference.py under their SageMaker contracts, and the endpoint app."""

import base64
import contextlib
import io
import itertools
import json
import os
import shutil
import signal
import tarfile
import threading
from pathlib import Path

import classifier
import inference
import numpy as np
import pytest
import torch
from conftest import REPO
from dogbreed.backends.local import LocalBackend
from dogbreed.serving import packaging, servable, server
from PIL import Image


@pytest.fixture(scope="module")
def trained(tiny_channels, tmp_path_factory):
    """One real, tiny training job through the local backend: (job result, channels folder)."""
    channels, _ = tiny_channels
    jobs = tmp_path_factory.mktemp("jobs")
    result = LocalBackend({}).train(
        "tiny",
        {"weights": "none", "image_size": 32, "epochs": 2, "batch_size": 8, "lr": 0.05, "num_workers": 0},
        {"train": f"file://{channels}/train", "valid": f"file://{channels}/valid"},
        jobs,
        REPO / "scripts",
        echo=False,
    )
    return result, channels


def test_training_job_follows_the_sagemaker_contract(trained):
    result, _ = trained
    assert result["status"] == "Completed"
    assert [m["epoch"] for m in result["metrics"]] == [1, 2]
    assert set(result["metrics"][0]) >= {"train_loss", "valid_loss", "valid_accuracy"}
    with tarfile.open(result["model_uri"][len("file://") :]) as archive:
        names = archive.getnames()
        info = json.load(archive.extractfile("model_info.json"))
    assert sorted(names) == ["model.pth", "model_info.json"]  # at the root, and no code/
    assert info["classes"] == ["Red_Circle", "Green_Square", "Blue_Triangle"]
    assert info["preprocessing"] == {
        "resize": 37,
        "crop": 32,
        "mean": classifier.IMAGENET_MEAN,
        "std": classifier.IMAGENET_STD,
    }


def test_the_epoch_with_the_lowest_validation_loss_is_kept(trained):
    result, _ = trained
    best = min(result["metrics"], key=lambda m: m["valid_loss"])["epoch"]
    assert f"keeping epoch {best} " in open(result["log"]).read()


def interrupted_after_first_epoch(train, args, monkeypatch, after_batches=0):
    """Run train.main(args) and stop it the way a reclaimed spot instance does: after epoch 1's
    checkpoint, `after_batches` batches into epoch 2."""
    run_epoch = train.run_epoch
    calls = []

    def batches_then_stop(loader):
        yield from itertools.islice(loader, after_batches)
        raise KeyboardInterrupt("spot instance reclaimed")

    def stop_in_epoch_two(model, loader, *a, **k):
        calls.append(1)
        if len(calls) == 3:  # epoch 1 trained and validated, epoch 2 starting
            return run_epoch(model, batches_then_stop(loader), *a, **k)
        return run_epoch(model, loader, *a, **k)

    with monkeypatch.context() as patch:
        patch.setattr(train, "run_epoch", stop_in_epoch_two)
        with pytest.raises(KeyboardInterrupt):
            train.main(args)


def run_main(train, args) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train.main(args)
    return out.getvalue()


def training_args(channels, folder):
    return [
        "--weights",
        "none",
        "--image_size",
        "32",
        "--epochs",
        "2",
        "--batch_size",
        "8",
        "--num_workers",
        "0",
        "--train",
        str(channels / "train"),
        "--valid",
        str(channels / "valid"),
        "--model_dir",
        str(folder / "m"),
        "--output_data_dir",
        str(folder / "o"),
        "--checkpoint_dir",
        str(folder / "c"),
    ]


@pytest.fixture
def train_args(tiny_channels, tmp_path):
    return training_args(tiny_channels[0], tmp_path)


def test_training_resumes_from_its_own_checkpoint(train_args, tmp_path, monkeypatch):
    import train

    monkeypatch.setenv("TRAINING_JOB_NAME", "train-abc")  # as SageMaker sets it, the same after a spot restart
    interrupted_after_first_epoch(train, train_args, monkeypatch)
    checkpoint = torch.load(tmp_path / "c/train-abc/checkpoint.pth", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["job_name"] == "train-abc"
    out = run_main(train, train_args)
    assert "resumed from" in out and "epoch=1 " not in out and "epoch=2 " in out
    assert not (tmp_path / "c/train-abc/checkpoint.pth").exists()  # done: later jobs sharing the prefix skip it


def recorded_run(output_dir):
    """What a job recorded: epochs in metrics.jsonl, (phase, epoch, step) timings, debug steps per tensor (the
    steps' losses and labels by mode, a weight's saved steps)."""
    epochs = [json.loads(line)["epoch"] for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [(s["phase"], s["epoch"], s["step"]) for s in map(json.loads, (output_dir / "profiler/steps.jsonl").open())]
    saved = [json.loads(line) for line in (output_dir / "debug/tensors.jsonl").read_text().splitlines()]
    batches = [json.loads(line) for line in (output_dir / "debug/batches.jsonl").read_text().splitlines()]
    tensors = {mode: [(b["step"], b["labels"]) for b in batches if b["mode"] == mode] for mode in ("TRAIN", "EVAL")}
    first_weight = next(name for name, t in saved[0]["tensors"].items() if t["collection"] == "weights")
    tensors["weights"] = [s["step"] for s in saved if first_weight in s["tensors"]]
    return epochs, steps, tensors


RECORDING = ["--debug", "true", "--profile", "true", "--save_interval", "2"]


@pytest.fixture(scope="module")
def uninterrupted_record(tiny_channels, tmp_path_factory):
    """What one uninterrupted 2-epoch job with debugger and profiler records."""
    import train

    folder = tmp_path_factory.mktemp("uninterrupted")
    channels, _ = tiny_channels
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAINING_JOB_NAME", "train-whole")
        run_main(train, [*training_args(channels, folder), *RECORDING])
    return recorded_run(folder / "o")


@pytest.mark.parametrize("output_after_restart", ["an empty folder", "the same folder"])
def test_a_resumed_job_records_the_whole_run(
    train_args, tmp_path, monkeypatch, output_after_restart, uninterrupted_record
):
    """After a spot restart (SageMaker: an empty output folder and the checkpoint folder back; by hand:
    the same folder, holding what was written after the checkpoint) the metrics, the profiler's step
    timings and the debug tensors are those of one uninterrupted run: no step missing or twice."""
    import train

    monkeypatch.setenv("TRAINING_JOB_NAME", "train-whole")
    interrupted_after_first_epoch(train, [*train_args, *RECORDING], monkeypatch, after_batches=2)
    assert (tmp_path / "c/train-whole/record/metrics.jsonl").is_file()
    assert ("train", 2, 1) in [
        (s["phase"], s["epoch"], s["step"]) for s in map(json.loads, open(tmp_path / "o/profiler/steps.jsonl"))
    ]
    restarted = tmp_path / ("restarted" if output_after_restart == "an empty folder" else "o")
    assert "resumed from" in run_main(train, [*train_args, *RECORDING, "--output_data_dir", str(restarted)])
    expected, got = uninterrupted_record, recorded_run(restarted)
    assert got[0] == expected[0] == [1, 2]
    assert got[1] == expected[1] and len(set(got[1])) == len(got[1])
    assert got[2] == expected[2] and len(got[2]["weights"]) > 2
    job = json.loads((restarted / "profiler/job.json").read_text())
    assert [r["after_epoch"] for r in job["resumes"]] == [1]
    assert not (tmp_path / "c/train-whole").exists() or not any((tmp_path / "c/train-whole").iterdir())


def test_another_jobs_checkpoint_is_never_resumed(train_args, tmp_path, monkeypatch):
    """The trials of a SageMaker tuning job share one checkpoint prefix: each finds the others' there."""
    import train

    monkeypatch.setenv("TRAINING_JOB_NAME", "tune-abc-001-x")
    interrupted_after_first_epoch(train, train_args, monkeypatch)
    monkeypatch.setenv("TRAINING_JOB_NAME", "tune-abc-002-y")
    out = run_main(train, train_args)
    assert "resumed from" not in out and "epoch=1 " in out and "epoch=2 " in out
    assert (tmp_path / "c/tune-abc-001-x/checkpoint.pth").exists()  # the other trial's, untouched
    # a checkpoint copied under this job's name is still refused when another job wrote it
    shutil.copytree(tmp_path / "c/tune-abc-001-x", tmp_path / "c/tune-abc-003-z")
    monkeypatch.setenv("TRAINING_JOB_NAME", "tune-abc-003-z")
    out = run_main(train, train_args)
    assert "ignoring" in out and "written by job 'tune-abc-001-x'" in out and "resumed from" not in out


def test_the_local_backend_resumes_an_interrupted_job(tiny_channels, tmp_path):
    """The same job name (same inputs) after a Ctrl-C: the rerun resumes from the job's own checkpoint."""
    channels, _ = tiny_channels
    backend = LocalBackend({})
    hyperparameters = {"weights": "none", "image_size": 32, "epochs": 2, "batch_size": 8, "num_workers": 0}
    job = (
        "tiny-resume",
        hyperparameters,
        {"train": f"file://{channels}/train", "valid": f"file://{channels}/valid"},
        tmp_path,
        REPO / "scripts",
    )

    def interrupt_after_epoch_one(line):
        if line.startswith("epoch=1 "):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backend.train(*job, on_line=interrupt_after_epoch_one, echo=False)
    assert (tmp_path / "tiny-resume/checkpoints/tiny-resume/checkpoint.pth").is_file()
    result = backend.train(*job, echo=False)
    assert "resumed from" in open(result["log"]).read() and "epoch=1 " not in open(result["log"]).read()
    assert [m["epoch"] for m in result["metrics"]] == [1, 2]  # the whole run's, as the train rule's metrics.csv


def test_unavailable_imagenet_weights_are_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache, and no network here
    monkeypatch.setattr(
        torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(OSError("offline"))
    )
    with pytest.raises(classifier.WeightsUnavailable, match="set model.weights to the path"):
        classifier.build_model("resnet18", 3, "imagenet")
    with pytest.raises(classifier.WeightsUnavailable, match="does not exist"):
        classifier.build_model("resnet18", 3, str(tmp_path / "missing.pth"))


def test_a_weights_file_is_loaded_without_its_head(tmp_path):
    source = classifier.build_model("resnet18", 1000, "none")
    torch.save(source.state_dict(), tmp_path / "imagenet.pth")
    model = classifier.build_model("resnet18", 5, str(tmp_path / "imagenet.pth"))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 5


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """The model packed for serving and extracted, as the endpoint sees it: (model_dir, loaded model)."""
    result, _ = trained
    folder = tmp_path_factory.mktemp("served")
    packaging.package_for_serving(result["model_uri"][len("file://") :], REPO / "scripts", folder / "model.tar.gz")
    with tarfile.open(folder / "model.tar.gz") as archive:
        assert "code/inference.py" in archive.getnames() and "model.pth" in archive.getnames()
        # what serving needs, nothing the toolkit would pip-install at start-up
        assert sorted(n for n in archive.getnames() if n.startswith("code/")) == [
            "code/classifier.py",
            "code/inference.py",
            "code/job_contract.py",
        ]
        archive.extractall(folder / "model", filter="data")
    return folder / "model", inference.model_fn(str(folder / "model"))


def image_file(channels, split="test"):
    return min((channels / split / "002.Green_Square").iterdir())


def npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def predict(body, content_type, model, accept="application/json"):
    out, kind = inference.output_fn(inference.predict_fn(inference.input_fn(body, content_type), model), accept)
    return json.loads(out) if kind == "application/json" else out


def test_all_request_formats_give_the_same_answer(served, trained):
    _, model = served
    _, channels = trained
    path = image_file(channels)
    spec = model["info"]["preprocessing"]
    with Image.open(path) as image:
        tensor = classifier.eval_transform(spec)(image.convert("RGB"))  # client-side, as the seed did
    raw = predict(path.read_bytes(), "image/jpeg", model)
    as_npy = predict(npy(tensor.unsqueeze(0).numpy()), "application/x-npy", model)
    as_json_b64 = predict(
        json.dumps({"instances": [{"b64": base64.b64encode(path.read_bytes()).decode()}]}), "application/json", model
    )
    as_json_array = predict(json.dumps({"instances": [tensor.tolist()]}), "application/json", model)
    as_bare_list = predict(json.dumps(tensor.unsqueeze(0).tolist()), "application/json", model)
    for answer in (as_npy, as_json_b64, as_json_array, as_bare_list):
        assert [p["index"] for p in answer["predictions"][0]] == [p["index"] for p in raw["predictions"][0]]
        assert answer["predictions"][0][0]["probability"] == pytest.approx(
            raw["predictions"][0][0]["probability"], abs=1e-4
        )
    top = raw["predictions"][0]
    assert len(top) == 3  # top-k, capped at the number of classes
    assert {p["breed"] for p in top} == {"Red_Circle", "Green_Square", "Blue_Triangle"}
    assert sum(p["probability"] for p in top) == pytest.approx(1, abs=1e-3)
    assert top == sorted(top, key=lambda p: -p["probability"])


def test_batches_and_npy_responses(served):
    _, model = served
    batch = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    answer = predict(npy(batch), "application/x-npy", model)
    assert len(answer["predictions"]) == 4
    probabilities = np.load(io.BytesIO(predict(npy(batch), "application/x-npy", model, accept="application/x-npy")))
    assert probabilities.shape == (4, 3) and np.allclose(probabilities.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize(
    "body, content_type, status, message",
    [
        (b"hello", "text/plain", 415, "unsupported Content-Type"),
        (b"not npy", "application/x-npy", 400, "not a .npy array"),
        (None, "application/x-npy", 400, "expected an N×3×H×W array"),
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b'{"instances": []}', "application/json", 400, "non-empty list"),
        (b'{"instances": ["@@@"]}', "application/json", 400, "not valid base64"),
        (b'{"instances": [[1, 2, 3]]}', "application/json", 400, "must be 3×H×W"),
        (b"\xff\xd8garbage", "image/jpeg", 400, "could not decode the image"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_reason(served, body, content_type, status, message):
    if body is None:
        body = npy(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(inference.RequestError, match=message) as caught:
        inference.input_fn(body, content_type)
    assert caught.value.status_code == status


def test_the_endpoint_app_serves_the_packed_code(served, trained):
    model_dir, _ = served
    _, channels = trained
    client = server.create_app(model_dir).test_client()
    assert client.get("/ping").status_code == 200
    path = image_file(channels)
    answer = client.post("/invocations", data=path.read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200 and answer.json["predictions"][0][0]["breed"]
    bad = client.post("/invocations", data=b"x", headers={"Content-Type": "text/csv"})
    assert bad.status_code == 415 and "unsupported Content-Type" in bad.json["error"]
    not_acceptable = client.post(
        "/invocations", data=path.read_bytes(), headers={"Content-Type": "image/jpeg", "Accept": "text/csv"}
    )
    assert not_acceptable.status_code == 406
    app = server.create_app(model_dir)
    app.config["MAX_CONTENT_LENGTH"] = 1000
    too_big = app.test_client().post("/invocations", data=b"0" * 2000, headers={"Content-Type": "application/x-npy"})
    assert too_big.status_code == 413 and "over 1000 bytes" in too_big.json["error"]


def noise_png(path, side, seed):
    """A photo-sized PNG that does not compress: side² × 3 bytes and a bit more."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, compress_level=1)
    return path


def test_request_plan_keeps_every_request_within_the_limit(tmp_path):
    from dogbreed.serving.evaluation import request_plan

    sizes = [100, 2_000_000, 2_000_000, 5_000_000, 100, 100, 1_000_000]
    paths = []
    for i, size in enumerate(sizes):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(b"x" * size)
    plan = request_plan(paths, max_images=2, max_bytes=5_000_000)
    # base64 adds a third: 2 MB images go 2 per request at most; the 5 MB one alone, as an array
    assert plan == [
        ("application/json", [0, 1]),
        ("application/x-npy", [3]),
        ("application/json", [2, 4]),
        ("application/json", [5, 6]),
    ]
    assert sorted(i for _, indices in plan for i in indices) == list(range(len(sizes)))  # each image once


def test_evaluate_sends_large_images_within_sagemakers_request_limit(served, trained, tmp_path):
    """Real photos and prepare's lossless PNGs are MBs each: 16 per request would break SageMaker's 6 MB
    limit, which the local server applies too. Requests are built by size; an image too big for JSON goes
    as its input array, preprocessed as the server would, so its answer is the same."""
    from dogbreed.backends.errors import EndpointRefused
    from dogbreed.serving import evaluation

    model_dir, model = served
    _, channels = trained
    test = tmp_path / "channels"
    rows = [("test/002.Green_Square/big.png", noise_png(test / "test/002.Green_Square/big.png", 1500, 0))]
    rows += [
        (f"test/001.Red_Circle/medium{i}.png", noise_png(test / f"test/001.Red_Circle/medium{i}.png", 700, i))
        for i in range(3)
    ]
    small = image_file(channels)
    rows.append(("test/002.Green_Square/small.jpg", small))
    (test / rows[-1][0]).write_bytes(small.read_bytes())
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,split,class_index,breed\n"
        + "".join(
            f"{path},test,{1 if 'Green' in path else 0},{'Green_Square' if 'Green' in path else 'Red_Circle'}\n"
            for path, _ in rows
        )
    )
    assert (test / rows[0][0]).stat().st_size > 6_291_456 > 2 * (test / rows[1][0]).stat().st_size

    model_tar = tmp_path / "served.tar.gz"
    with tarfile.open(model_tar, "w:gz") as archive:
        for path in sorted(model_dir.rglob("*")):
            archive.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    backend = LocalBackend({"startup_timeout": 60})
    endpoint = backend.deploy(model_tar, "dogbreed-large", tmp_path / "state")
    try:
        classes = {"0": "Red_Circle", "1": "Green_Square", "2": "Blue_Triangle"}
        metrics, predictions = evaluation.evaluate(
            backend, endpoint, manifest, test, classes, batch_size=16, transform=evaluation.served_transform(model_tar)
        )
        assert metrics["n"] == 5 and metrics["largest_request_bytes"] <= 5_000_000  # SageMaker takes 6,291,456
        assert metrics["requests"] == 3 and metrics["images_sent_as_arrays"] == 1  # the big one alone; 2 + 2 the others
        assert list(predictions["sent_as"]) == ["application/x-npy"] + ["application/json"] * 4
        # the array gets the answer the raw image would (in process: the image alone is over the limit)
        direct = predict((test / rows[0][0]).read_bytes(), "image/png", model)["predictions"][0][0]
        assert predictions["predicted_index"][0] == direct["index"]
        assert predictions["probability"][0] == pytest.approx(direct["probability"], abs=1e-4)

        # an endpoint with a smaller limit of its own (a SageMaker serverless endpoint's 4 MB): packed under it
        class Smaller(LocalBackend):
            def request_limit(self, endpoint):
                return 1_000_000

        smaller, _ = evaluation.evaluate(
            Smaller({}),
            endpoint,
            manifest,
            test,
            classes,
            batch_size=16,
            transform=evaluation.served_transform(model_tar),
        )
        assert smaller["max_request_bytes"] == 1_000_000 and smaller["largest_request_bytes"] <= 1_000_000
        assert smaller["requests"] > metrics["requests"] and smaller["n"] == 5
        # what 16 images per request did: one body over the limit, refused with a clear 413
        body = json.dumps({"instances": [{"b64": base64.b64encode((test / p).read_bytes()).decode()} for p, _ in rows]})
        with pytest.raises(EndpointRefused, match=r"answered 413 to a request of [\d,]+ bytes"):
            backend.invoke(endpoint, body.encode(), "application/json")
    finally:
        backend.teardown(tmp_path / "state")


class FlakyEndpoint(LocalBackend):
    """The local backend, whose server is killed (a real kill) as the request numbered kill_at is sent, and, with
    revive_after, brought back at its address that many seconds later: a restarting endpoint, or a dead one."""

    def __init__(self, kill_at=None, revive_after=None, model_tar=None, state_dir=None):
        super().__init__({"startup_timeout": 60})
        self.kill_at, self.revive_after, self.model_tar, self.state_dir = kill_at, revive_after, model_tar, state_dir
        self.requests, self.images_sent = 0, 0

    def invoke(self, endpoint, body, content_type, accept="application/json"):
        self.requests += 1
        if self.requests == self.kill_at:
            os.killpg(json.loads((self.state_dir / "state.json").read_text())["pid"], signal.SIGKILL)
            if self.revive_after is not None:
                threading.Timer(self.revive_after, self.revive, (endpoint, self.model_tar, self.state_dir)).start()
        answer = super().invoke(endpoint, body, content_type, accept)
        self.images_sent += len(json.loads(body)["instances"])
        return answer


def test_evaluate_rides_out_a_restarting_endpoint_and_resumes_after_a_dead_one(served, tiny_channels, tmp_path, capsys):
    """Killed as the second request goes out and back 1.5 s later, the endpoint costs retries, not the evaluation;
    killed for good, it costs one line, and the rerun sends only the images not answered yet."""
    from dogbreed.backends.errors import EndpointGone
    from dogbreed.serving import evaluation

    channels, prepared = tiny_channels
    model_tar, state = served[0].parent / "model.tar.gz", tmp_path / "state"
    args = (prepared / "manifest.csv", channels, {"0": "Red_Circle", "1": "Green_Square", "2": "Blue_Triangle"}, 2)
    restarting = FlakyEndpoint(kill_at=2, revive_after=1.5, model_tar=model_tar, state_dir=state)
    endpoint = restarting.deploy(model_tar, "dogbreed-flaky", state)
    try:
        whole, rows = evaluation.evaluate(restarting, endpoint, *args)
        assert "did not answer (ConnectionError): sending it again in" in capsys.readouterr().out
        assert restarting.images_sent == whole["n"] > 4  # every image answered once

        answers = evaluation.Answers(tmp_path / "answers.jsonl", "this model, this split")
        dead = FlakyEndpoint(kill_at=2, state_dir=state)
        with pytest.raises(EndpointGone) as gone:
            evaluation.evaluate(dead, endpoint, *args, answers=answers, retry_for_s=1)
        assert "\n" not in str(gone.value)
        assert f"still after 1 s of retries (evaluation.retry_for_s); 2 of {whole['n']} images are answered" in str(
            gone.value
        )
        restarting.revive(endpoint, model_tar, state)  # what the rerun's evaluate does first
        rerun = FlakyEndpoint(state_dir=state)
        again, rerun_rows = evaluation.evaluate(
            rerun, endpoint, *args, answers=evaluation.Answers(tmp_path / "answers.jsonl", "this model, this split")
        )
        assert rerun.images_sent == whole["n"] - 2 and again["accuracy"] == whole["accuracy"]
        assert rerun_rows["predicted_index"].tolist() == rows["predicted_index"].tolist()
        assert evaluation.Answers(tmp_path / "answers.jsonl", "another model").predictions == {}  # never mixed
    finally:
        restarting.teardown(state)


def test_a_busy_or_restarting_endpoints_answers_are_sent_again_and_a_client_error_is_not():
    """A real HTTP server on 127.0.0.1 answering 503 (TorchServe while its worker loads), then 502, then the
    answer: evaluate's request gets through. A 400 is the client's mistake: said at once, never retried."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from dogbreed.backends.errors import EndpointRefused
    from dogbreed.serving import evaluation

    statuses = [503, 502, 200, 400]

    class Server(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            status = statuses.pop(0)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server_ = ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server_.serve_forever, daemon=True).start()
    endpoint = {"url": f"http://127.0.0.1:{server_.server_port}"}
    try:
        assert evaluation.send(LocalBackend({}), endpoint, b"{}", "application/json", retry_for_s=60) == b"{}"
        assert statuses == [400]
        with pytest.raises(EndpointRefused, match="answered 400"):
            evaluation.send(LocalBackend({}), endpoint, b"{}", "application/json", retry_for_s=60)
    finally:
        server_.shutdown()
        server_.server_close()


def test_an_artifact_that_cannot_be_served_is_refused_before_anything_is_touched(served, trained, tmp_path):
    """deploy's check (start_endpoint runs it before the backend stops what serves now): a truncated archive, a model
    that does not load, a training artifact package_model cannot read — each one line naming the file and the command
    that makes it again."""
    result, _ = trained
    good = tmp_path / "good.tar.gz"
    packaging.package_for_serving(result["model_uri"][len("file://") :], REPO / "scripts", good)
    servable.check_servable(good, "remake-it")  # loads

    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(servable.ArtifactError, match=r"truncated.tar.gz cannot be read .*`remake-it`"):
        servable.check_servable(truncated, "remake-it")

    broken = tmp_path / "broken.tar.gz"  # whole archive, garbage weights
    with tarfile.open(good) as source, tarfile.open(broken, "w:gz") as out:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name == "model.pth":
                data = b"not a model"
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    with pytest.raises(servable.ArtifactError, match=r"the model in .*broken.tar.gz does not load"):
        servable.check_servable(broken, "remake-it")

    with pytest.raises(servable.ArtifactError, match=r"truncated.tar.gz cannot be read .*`train-again`"):
        packaging.package_for_serving(truncated, REPO / "scripts", tmp_path / "out.tar.gz", "train-again")
    assert not (tmp_path / "out.tar.gz").exists()


def test_a_checkpoint_write_that_fails_leaves_the_previous_one_and_nothing_else(tmp_path, monkeypatch):
    """A full disk mid-save (torch.save raising after writing part of the file): the previous checkpoint stays whole
    and no partial copy is left; a kill's leftover from an earlier save goes at the next one."""
    import errno
    from types import SimpleNamespace

    import train

    checkpoint = train.Checkpoint(tmp_path / "checkpoints", "job-1")
    checkpoint.path.parent.mkdir(parents=True)
    checkpoint.path.write_bytes(b"epoch 1")
    (checkpoint.path.parent / "checkpoint.pth.999999.partial").write_bytes(b"a killed save's")  # another pid's
    (checkpoint.path.parent / "checkpoint.tmp").write_bytes(b"an older version's")
    state = SimpleNamespace(state_dict=dict)
    model = SimpleNamespace(model=state, optimizer=state, scheduler=state, compute=SimpleNamespace(scaler=state))

    def full_disk(obj, path):
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(train.torch, "save", full_disk)
    with pytest.raises(OSError):
        checkpoint.save(model, 2, {}, None, tmp_path / "output")
    assert checkpoint.path.read_bytes() == b"epoch 1"
    assert [p.name for p in checkpoint.path.parent.iterdir()] == ["checkpoint.pth"]
