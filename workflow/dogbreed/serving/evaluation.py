"""Evaluate stage: send every test image to the endpoint (batched JSON requests of base64 images, so
the server preprocesses them exactly as it does for any client) and score the answers.

Requests are built by size: SageMaker's real-time endpoints refuse a body over 6,291,456 bytes
(the local server takes the same), and a few large photos, or the lossless
PNGs prepare writes for converted images, reach that in far fewer than 16 images. An image too big to
go alone is sent as the model's input array instead (the same preprocessing the server would apply).
"""

import base64
import io
import json
import time
from pathlib import Path

import job_contract as contract
import numpy as np
import pandas as pd
from tqdm import tqdm

from dogbreed.backends.errors import EndpointGone
from dogbreed.runtime import run_options

MAX_REQUEST_BYTES = 5_000_000  # evaluation.max_request_bytes' default: well under SageMaker's 6,291,456
JSON_FRAME = len('{"instances": []}')


class RequestTooLarge(ValueError):
    pass


def restart_hint(results_dir) -> str:
    return f"bring it back with: {run_options.command('deploy --forcerun start_endpoint')} (results_dir={results_dir})"


def json_instance(path) -> str:
    return json.dumps({"b64": base64.b64encode(Path(path).read_bytes()).decode()})


def request_plan(image_paths, max_images, max_bytes):
    """[(content type, [indices])]: JSON requests of up to max_images base64 images and at most max_bytes
    each; an image whose instance alone is over max_bytes goes alone, as an npy array."""
    plan, batch, size = [], [], JSON_FRAME
    for index, path in enumerate(image_paths):
        instance = 4 * -(-Path(path).stat().st_size // 3) + len('{"b64": ""}')  # its base64 length, framed
        if JSON_FRAME + instance > max_bytes:
            plan.append((contract.NPY, [index]))
            continue
        if batch and (len(batch) == max_images or size + 2 + instance > max_bytes):
            plan.append((contract.JSON, batch))
            batch, size = [], JSON_FRAME
        size += instance + (2 if batch else 0)  # ", " between instances
        batch.append(index)
    if batch:
        plan.append((contract.JSON, batch))
    return plan


def request_body(content_type, paths, transform, max_bytes) -> bytes:
    if content_type == contract.JSON:
        return ('{"instances": [' + ", ".join(json_instance(p) for p in paths) + "]}").encode()
    from PIL import Image  # one image too big for JSON: its input array, preprocessed as the server would

    with Image.open(paths[0]) as image:
        array = transform(image.convert("RGB")).unsqueeze(0).numpy()
    buffer = io.BytesIO()
    np.save(buffer, array)
    if buffer.tell() > max_bytes:
        raise RequestTooLarge(
            f"{paths[0]} is over evaluation.max_request_bytes ({max_bytes}) even as its "
            f"{list(array.shape)} input array: lower model.image_size or raise the limit"
        )
    return buffer.getvalue()


def served_transform(model_tar):
    """The served model's eval-time preprocessing, built by the classifier.py packed in its code/ from
    its model_info.json: exactly what the endpoint does to an image it receives."""
    import importlib.util
    import tarfile
    import tempfile

    with tarfile.open(model_tar) as archive, tempfile.TemporaryDirectory() as code:
        info = json.load(archive.extractfile("model_info.json"))
        (Path(code) / "classifier.py").write_bytes(archive.extractfile("code/classifier.py").read())
        spec = importlib.util.spec_from_file_location("served_classifier", Path(code) / "classifier.py")
        classifier = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(classifier)
    return classifier.eval_transform(info["preprocessing"])


def predict_all(backend, endpoint, image_paths, batch_size, max_bytes=MAX_REQUEST_BYTES, transform=None):
    """Returns (top-k prediction lists, per-request latencies in ms, per-image request content type,
    the largest request's size in bytes)."""
    predictions, latencies = [None] * len(image_paths), []
    sent_as, largest = [None] * len(image_paths), 0
    for content_type, indices in tqdm(
        request_plan(image_paths, batch_size, max_bytes), desc="evaluate", unit="request"
    ):
        body = request_body(content_type, [image_paths[i] for i in indices], transform, max_bytes)
        largest = max(largest, len(body))
        sent = time.perf_counter()
        answer = json.loads(backend.invoke(endpoint, body, content_type))
        latencies.append((time.perf_counter() - sent) * 1000)
        if len(answer["predictions"]) != len(indices):
            raise RuntimeError(
                f"the endpoint answered {len(answer['predictions'])} predictions for {len(indices)} images"
            )
        for i, prediction in zip(indices, answer["predictions"]):
            predictions[i], sent_as[i] = prediction, content_type
    return predictions, latencies, sent_as, largest


def evaluate(
    backend,
    endpoint,
    manifest_csv,
    channels_dir,
    classes: dict,
    batch_size=16,
    results_dir="results",
    max_request_bytes=MAX_REQUEST_BYTES,
    transform=None,
):
    """transform: the served model's eval preprocessing, for images too big to send as JSON."""
    if not backend.healthy(endpoint):
        raise EndpointGone(
            f"the endpoint {endpoint.get('endpoint_name')} at {endpoint.get('url')} does not answer "
            f"/ping: it was stopped (teardown, reboot) or crashed; {restart_hint(results_dir)}"
        )
    manifest = pd.read_csv(manifest_csv)
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    paths = [str(Path(channels_dir) / p) for p in test["path"]]
    predictions, latencies, sent_as, largest = predict_all(
        backend, endpoint, paths, batch_size, max_request_bytes, transform
    )

    top1 = np.array([p[0]["index"] for p in predictions])
    truth = test["class_index"].to_numpy()
    in_top5 = np.array([t in [q["index"] for q in p[:5]] for t, p in zip(truth, predictions)])
    rows = pd.DataFrame(
        {
            "path": test["path"],
            "true_index": truth,
            "true_breed": test["breed"],
            "predicted_index": top1,
            "predicted_breed": [p[0]["breed"] for p in predictions],
            "probability": [p[0]["probability"] for p in predictions],
            "correct": top1 == truth,
            "top5_indices": [" ".join(str(q["index"]) for q in p[:5]) for p in predictions],
            "sent_as": sent_as,
        }
    )

    n_classes = max(int(i) for i in classes) + 1  # numbered folders may leave gaps
    names = [classes.get(str(i), f"class_{i + 1:03d}") for i in range(n_classes)]
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (truth, top1), 1)
    per_class = {}
    for index in range(n_classes):
        mask = truth == index
        if mask.any():
            per_class[names[index]] = {
                "index": index,
                "n": int(mask.sum()),
                "accuracy": round(float((top1[mask] == index).mean()), 4),
            }
    latency = np.array(latencies)
    return {
        "accuracy": round(float((top1 == truth).mean()), 4),
        "top5_accuracy": round(float(in_top5.mean()), 4),
        "n": len(truth),
        "chance_accuracy": round(1 / len(classes), 4),
        "per_class_accuracy": per_class,
        "confusion_matrix": {"classes": names, "matrix": confusion.tolist()},
        "latency_ms": {
            "p50": round(float(np.percentile(latency, 50)), 2),
            "p95": round(float(np.percentile(latency, 95)), 2),
            "p99": round(float(np.percentile(latency, 99)), 2),
            "mean": round(float(latency.mean()), 2),
        },
        "requests": len(latencies),
        "max_images_per_request": batch_size,
        "max_request_bytes": max_request_bytes,
        "largest_request_bytes": largest,
        "images_sent_as_arrays": sent_as.count(contract.NPY),
        "endpoint": {k: endpoint.get(k) for k in ("backend", "endpoint_name", "url")},
    }, rows
