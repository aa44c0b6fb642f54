"""scripts/train.py and scripts/inference.py under their SageMaker contracts, and the endpoint app."""
import base64
import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import classifier
import inference
from conftest import REPO, jpeg_bytes
from dogbreed import packaging, serving
from dogbreed.backends.local import LocalBackend


@pytest.fixture(scope="module")
def trained(tiny_channels, tmp_path_factory):
    """One real, tiny training job through the local backend: (job result, channels folder)."""
    channels, _ = tiny_channels
    jobs = tmp_path_factory.mktemp("jobs")
    result = LocalBackend({}).train(
        "tiny", {"weights": "none", "image_size": 32, "epochs": 2, "batch_size": 8, "lr": 0.05, "num_workers": 0},
        {"train": f"file://{channels}/train", "valid": f"file://{channels}/valid"}, jobs, REPO / "scripts", echo=False)
    return result, channels


def test_training_job_follows_the_sagemaker_contract(trained):
    result, _ = trained
    assert result["status"] == "Completed"
    assert [m["epoch"] for m in result["metrics"]] == [1, 2]
    assert set(result["metrics"][0]) >= {"train_loss", "valid_loss", "valid_accuracy"}
    with tarfile.open(result["model_uri"][len("file://"):]) as archive:
        names = archive.getnames()
        info = json.load(archive.extractfile("model_info.json"))
    assert sorted(names) == ["model.pth", "model_info.json"]  # at the root, and no code/
    assert info["classes"] == ["Red_Circle", "Green_Square", "Blue_Triangle"]
    assert info["preprocessing"] == {"resize": 37, "crop": 32, "mean": classifier.IMAGENET_MEAN, "std": classifier.IMAGENET_STD}


def test_the_epoch_with_the_lowest_validation_loss_is_kept(trained):
    result, _ = trained
    best = min(result["metrics"], key=lambda m: m["valid_loss"])["epoch"]
    assert f"keeping epoch {best} " in open(result["log"]).read()


def test_training_resumes_from_a_checkpoint(tiny_channels, tmp_path):
    channels, _ = tiny_channels
    args = ["--weights", "none", "--image_size", "32", "--epochs", "2", "--batch_size", "8", "--num_workers", "0",
            "--train", str(channels / "train"), "--valid", str(channels / "valid"), "--model_dir", str(tmp_path / "m"),
            "--output_data_dir", str(tmp_path / "o"), "--checkpoint_dir", str(tmp_path / "c")]
    import train
    train.main(args[:5] + ["1"] + args[6:])  # one epoch, then "interrupted"
    assert torch.load(tmp_path / "c/checkpoint.pth", weights_only=True)["epoch"] == 1
    out = io.StringIO()
    import contextlib
    with contextlib.redirect_stdout(out):
        train.main(args)
    assert "resumed from" in out.getvalue() and "epoch=1 " not in out.getvalue() and "epoch=2 " in out.getvalue()


def test_unavailable_imagenet_weights_are_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache, and no network here
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
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
    packaging.package_for_serving(result["model_uri"][len("file://"):], REPO / "scripts", folder / "model.tar.gz")
    with tarfile.open(folder / "model.tar.gz") as archive:
        assert "code/inference.py" in archive.getnames() and "model.pth" in archive.getnames()
        # what serving needs, nothing the toolkit would pip-install at start-up
        assert sorted(n for n in archive.getnames() if n.startswith("code/")) == ["code/classifier.py", "code/inference.py"]
        archive.extractall(folder / "model", filter="data")
    return folder / "model", inference.model_fn(str(folder / "model"))


def image_file(channels, split="test"):
    return sorted((channels / split / "002.Green_Square").iterdir())[0]


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
    as_json_b64 = predict(json.dumps({"instances": [{"b64": base64.b64encode(path.read_bytes()).decode()}]}),
                          "application/json", model)
    as_json_array = predict(json.dumps({"instances": [tensor.tolist()]}), "application/json", model)
    as_bare_list = predict(json.dumps(tensor.unsqueeze(0).tolist()), "application/json", model)
    for answer in (as_npy, as_json_b64, as_json_array, as_bare_list):
        assert [p["index"] for p in answer["predictions"][0]] == [p["index"] for p in raw["predictions"][0]]
        assert answer["predictions"][0][0]["probability"] == pytest.approx(raw["predictions"][0][0]["probability"], abs=1e-4)
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


@pytest.mark.parametrize("body, content_type, status, message", [
    (b"hello", "text/plain", 415, "unsupported Content-Type"),
    (b"not npy", "application/x-npy", 400, "not a .npy array"),
    (None, "application/x-npy", 400, "expected an N×3×H×W array"),
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b'{"instances": []}', "application/json", 400, "non-empty list"),
    (b'{"instances": ["@@@"]}', "application/json", 400, "not valid base64"),
    (b'{"instances": [[1, 2, 3]]}', "application/json", 400, "must be 3×H×W"),
    (b"\xff\xd8garbage", "image/jpeg", 400, "could not decode the image"),
])
def test_bad_requests_get_a_4xx_with_a_reason(served, body, content_type, status, message):
    if body is None:
        body = npy(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(inference.RequestError, match=message) as caught:
        inference.input_fn(body, content_type)
    assert caught.value.status_code == status


def test_the_endpoint_app_serves_the_packed_code(served, trained):
    model_dir, _ = served
    _, channels = trained
    client = serving.create_app(model_dir).test_client()
    assert client.get("/ping").status_code == 200
    path = image_file(channels)
    answer = client.post("/invocations", data=path.read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200 and answer.json["predictions"][0][0]["breed"]
    bad = client.post("/invocations", data=b"x", headers={"Content-Type": "text/csv"})
    assert bad.status_code == 415 and "unsupported Content-Type" in bad.json["error"]
    not_acceptable = client.post("/invocations", data=path.read_bytes(),
                                 headers={"Content-Type": "image/jpeg", "Accept": "text/csv"})
    assert not_acceptable.status_code == 406
    app = serving.create_app(model_dir)
    app.config["MAX_CONTENT_LENGTH"] = 1000
    too_big = app.test_client().post("/invocations", data=b"0" * 2000, headers={"Content-Type": "application/x-npy"})
    assert too_big.status_code == 413 and "over 1000 bytes" in too_big.json["error"]
