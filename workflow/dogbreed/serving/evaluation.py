"""Evaluate stage: send every test image to the endpoint (batched JSON requests of base64 images, so
the server preprocesses them exactly as it does for any client) and score the answers.

Requests are built by size: SageMaker's real-time endpoints refuse a body over 6,291,456 bytes
(the local server takes the same), and a few large photos, or the lossless
PNGs prepare writes for converted images, reach that in far fewer than 16 images. An image too big to
go alone is sent as the model's input array instead (the same preprocessing the server would apply).

An endpoint may be briefly unable to answer (a restarting server, throttling, a model still loading): such a
request is sent again with backoff (tenacity) for up to evaluation.retry_for_s. Every answer is kept as it
comes (Answers), so an endpoint that died for good costs one line, and the rerun, which brings the endpoint
back first (scripts/evaluate.py), sends only the images not answered yet.
"""

import base64
import functools
import hashlib
import io
import json
import time
from pathlib import Path

import job_contract as contract
import numpy as np
import pandas as pd
import tenacity
from tqdm import tqdm

from dogbreed.backends.errors import EndpointGone, EndpointUnavailable
from dogbreed.serving import servable

MAX_REQUEST_BYTES = 5_000_000  # evaluation.max_request_bytes' default: well under SageMaker's 6,291,456
RETRY_FOR_S = 120  # evaluation.retry_for_s' default
JSON_FRAME = len('{"instances": []}')


class RequestTooLarge(ValueError):
    pass


class Answers:
    """The endpoint's answers so far, one JSON line per request beside the evaluation's outputs (not one of
    them: Snakemake deletes a failed job's outputs), so a rerun sends only the rest. The first line says what
    they are answers to (identity: the served artifact, the test split, the request sizes); answers to
    anything else are dropped. A line cut short by a kill is ignored."""

    def __init__(self, path=None, identity=""):
        self.path, self.identity = Path(path) if path else None, identity  # no path: kept in memory only
        self.predictions, self.sent_as, self.latencies, self.largest = {}, {}, [], 0
        if self.path is None:
            return
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        if not lines or _json_or_none(lines[0]) != {"identity": identity}:
            lines = [json.dumps({"identity": identity})]
        kept = [lines[0]] + [line for line in lines[1:] if _json_or_none(line) is not None]
        for line in kept[1:]:
            self._take(json.loads(line))
        # written again whole: a line a kill cut short is dropped, not joined to the next one appended
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(kept) + "\n")

    def _take(self, request):
        for image, prediction in zip(request["images"], request["predictions"]):
            self.predictions[image], self.sent_as[image] = prediction, request["sent_as"]
        self.latencies.append(request["latency_ms"])
        self.largest = max(self.largest, request["bytes"])

    def record(self, images, predictions, sent_as, latency_ms, size):
        request = {"images": images, "predictions": predictions, "sent_as": sent_as, "latency_ms": latency_ms}
        request["bytes"] = size
        if self.path is not None:
            with open(self.path, "a") as journal:
                journal.write(json.dumps(request) + "\n")
        self._take(request)

    def done(self):
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _json_or_none(line):
    try:
        return json.loads(line)
    except ValueError:
        return None


def request_byte_limit(backend, endpoint, configured) -> int:
    """The bytes a request may have: evaluation.max_request_bytes, or the endpoint's own limit where smaller (a
    SageMaker serverless endpoint's 4 MB)."""
    own = backend.request_limit(endpoint)
    return configured if own is None else min(configured, own)


def answers_identity(model_tar, manifest_csv, batch_size, max_bytes) -> str:
    digest = hashlib.sha256()
    for path in (model_tar, manifest_csv):
        digest.update(Path(path).read_bytes())
    digest.update(f"{batch_size} {max_bytes}".encode())
    return digest.hexdigest()


def send(backend, endpoint, body, content_type, retry_for_s) -> bytes:
    """One request, sent again with exponential backoff (0.5 s doubling, at most 15 s apart) while the endpoint
    cannot take it now (EndpointUnavailable), for up to retry_for_s; then that error."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(EndpointUnavailable),
        wait=tenacity.wait_exponential(multiplier=0.5, max=15),
        stop=tenacity.stop_after_delay(retry_for_s),
        reraise=True,
        before_sleep=lambda attempt: print(
            f"{attempt.outcome.exception()}: sending it again in {attempt.next_action.sleep:.1f} s", flush=True
        ),
    )
    return retrying(backend.invoke, endpoint, body, content_type)


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
    its model_info.json: exactly what the endpoint does to an image it receives. Built at its first image (one too
    big for JSON), so an evaluation that sends JSON alone never imports torch (seconds)."""

    @functools.cache
    def build():
        import importlib.util
        import tarfile
        import tempfile

        with tarfile.open(model_tar) as archive, tempfile.TemporaryDirectory() as code:
            (Path(code) / "classifier.py").write_bytes(archive.extractfile("code/classifier.py").read())
            spec = importlib.util.spec_from_file_location("served_classifier", Path(code) / "classifier.py")
            classifier = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(classifier)
        return classifier.eval_transform(servable.model_info(model_tar)["preprocessing"])

    return lambda image: build()(image)


def predict_all(
    backend,
    endpoint,
    image_paths,
    batch_size,
    max_bytes=MAX_REQUEST_BYTES,
    transform=None,
    answers: Answers = None,
    retry_for_s=RETRY_FOR_S,
):
    """Returns (top-k prediction lists, per-request latencies in ms, per-image request content type,
    the largest request's size in bytes). answers: those kept by an earlier run (they are not sent again),
    and where the new ones are kept."""
    answers = answers or Answers()
    todo = [path for path in image_paths if path not in answers.predictions]
    if len(todo) < len(image_paths):
        print(f"{len(image_paths) - len(todo)} of {len(image_paths)} images were answered before: sending the rest")
    for content_type, indices in tqdm(request_plan(todo, batch_size, max_bytes), desc="evaluate", unit="request"):
        images = [todo[i] for i in indices]
        body = request_body(content_type, images, transform, max_bytes)
        sent = time.perf_counter()
        try:
            answer = json.loads(send(backend, endpoint, body, content_type, retry_for_s))
        except EndpointUnavailable as error:
            raise EndpointGone(
                f"{error}, still after {retry_for_s:g} s of retries (evaluation.retry_for_s); "
                f"{len(answers.predictions)} of {len(image_paths)} images are answered, kept in {answers.path}: "
                f"run the same command again, which brings the endpoint back at its address and sends the rest"
            ) from None
        latency = (time.perf_counter() - sent) * 1000
        if len(answer["predictions"]) != len(indices):
            raise RuntimeError(
                f"the endpoint answered {len(answer['predictions'])} predictions for {len(indices)} images"
            )
        answers.record(images, answer["predictions"], content_type, latency, len(body))
    predictions = [answers.predictions[path] for path in image_paths]
    return predictions, answers.latencies, [answers.sent_as[path] for path in image_paths], answers.largest


def evaluate(
    backend,
    endpoint,
    manifest_csv,
    channels_dir,
    classes: dict,
    batch_size=16,
    max_request_bytes=MAX_REQUEST_BYTES,
    transform=None,
    answers: Answers = None,
    retry_for_s=RETRY_FOR_S,
):
    """transform: the served model's eval preprocessing, for images too big to send as JSON; answers: kept
    from an earlier run and for the next (predict_all). Requests stay within max_request_bytes, or the endpoint's
    own limit where smaller (request_byte_limit)."""
    max_request_bytes = request_byte_limit(backend, endpoint, max_request_bytes)
    manifest = pd.read_csv(manifest_csv)
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    paths = [str(Path(channels_dir) / p) for p in test["path"]]
    predictions, latencies, sent_as, largest = predict_all(
        backend, endpoint, paths, batch_size, max_request_bytes, transform, answers, retry_for_s
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
    # the first request apart: a serverless endpoint (or a server's first model load) starts cold
    cold_start_ms, latency = latencies[0], np.array(latencies[1:] or latencies)
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
        "cold_start_ms": round(float(cold_start_ms), 2),
        "requests": len(latencies),
        "max_images_per_request": batch_size,
        "max_request_bytes": max_request_bytes,
        "largest_request_bytes": largest,
        "images_sent_as_arrays": sent_as.count(contract.NPY),
        "endpoint": {k: endpoint.get(k) for k in ("backend", "endpoint_name", "url")},
    }, rows
