"""Serving functions under the SageMaker PyTorch inference contract (model_fn, input_fn, predict_fn, output_fn).

Requests (Content-Type):
  application/x-npy   float32 array N×3×H×W (or 3×H×W), already normalised with the model's mean/std
  application/json    {"instances": [...]} (or a bare list): each instance a 3×H×W nested list, or an
                      image as {"b64": "<base64>"} / a base64 string
  image/jpeg, image/png, application/x-image
                      one raw image, preprocessed here exactly as in training
Responses (Accept): application/json (default)
  {"predictions": [[{"index": 0, "breed": "Affenpinscher", "probability": 0.93}, ... top k], ...]}
  one list per input; index is 0-based (folder number - 1). application/x-npy returns the N×C
  probability matrix.
Bad input raises RequestError: a 4xx `status_code` and a one-line message saying what was wrong, the
same through the local server and SageMaker's inference toolkit (whose error class it is, there).
"""
import base64
import binascii
import io
import json
import os
from http import HTTPStatus

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

import classifier

JSON = "application/json"
NPY = "application/x-npy"
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
MAX_BATCH = 256  # requests carrying more inputs than this are refused; split them client side
TOP_K = int(os.environ.get("TOP_K", "5"))


try:  # SageMaker's inference toolkit answers a handler error's status only for its own error class
    from sagemaker_inference.errors import BaseInferenceToolkitError as HandlerError
except ImportError:  # the local server (dogbreed.serving), which reads the same three attributes
    class HandlerError(Exception):
        def __init__(self, status_code, message, phrase):
            super().__init__(status_code, message, phrase)
            self.status_code, self.message, self.phrase = status_code, message, phrase


def error_body(reason: str) -> str:
    """The first line of every error answer, on every backend: {"error": "<one line>"}. (The toolkit
    appends a traceback on the lines after it; the local server sends this line alone.)"""
    return json.dumps({"error": " ".join(reason.split())})


class RequestError(HandlerError, ValueError):
    """Bad input: the server answers `status_code` with error_body(reason)."""

    def __init__(self, reason, status_code=400):
        super().__init__(status_code, error_body(reason), HTTPStatus(status_code).phrase)
        self.reason = reason

    def __str__(self):
        return self.reason


# The SageMaker toolkit calls input_fn(body, content_type) without the model, yet raw images need the
# model's own preprocessing: model_fn keeps it here (one model per serving process).
_served = {}


def model_fn(model_dir):
    device = classifier.pick_device()
    model, info = classifier.load_model(model_dir, device)
    _served["transform"] = classifier.eval_transform(info["preprocessing"])
    return {"model": model, "info": info, "device": device}


def _decode_image(data: bytes, transform) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return transform(image.convert("RGB"))
    except UnidentifiedImageError as error:  # its text names a Python object, not the problem
        raise RequestError("could not decode the image: not a format PIL reads (JPEG, PNG, ...)") from error
    except OSError as error:
        raise RequestError(f"could not decode the image ({error})") from error


def _instance_to_tensor(instance, transform) -> torch.Tensor:
    if isinstance(instance, dict) and "b64" in instance:
        instance = instance["b64"]
    if isinstance(instance, str):
        try:
            data = base64.b64decode(instance, validate=True)
        except (binascii.Error, ValueError) as error:
            raise RequestError(f"an instance is a string but not valid base64 ({error})") from error
        return _decode_image(data, transform)
    array = np.asarray(instance, dtype=np.float32)
    if array.ndim != 3 or array.shape[0] != 3:
        raise RequestError(f"an array instance must be 3×H×W (normalised RGB), got shape {list(array.shape)}")
    return torch.from_numpy(array)


def _check_batch(batch: torch.Tensor) -> torch.Tensor:
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise RequestError(f"expected an N×3×H×W array, got shape {list(batch.shape)}")
    if not 1 <= batch.shape[0] <= MAX_BATCH:
        raise RequestError(f"a request must hold 1 to {MAX_BATCH} inputs, got {batch.shape[0]}")
    if min(batch.shape[2:]) < 16:
        raise RequestError(f"images must be at least 16×16 pixels, got {batch.shape[2]}×{batch.shape[3]}")
    if not torch.isfinite(batch).all():
        raise RequestError("the input holds NaN or infinite values")
    return batch


def input_fn(request_body, request_content_type):
    """Request bytes → N×3×H×W float tensor (images preprocessed with the served model's spec)."""
    content_type = (request_content_type or "").split(";")[0].strip().lower()
    transform = _served.get("transform")
    if isinstance(request_body, str):
        request_body = request_body.encode()
    if content_type == NPY:
        try:
            array = np.load(io.BytesIO(request_body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise RequestError(f"body is not a .npy array ({error})") from error
        if not np.issubdtype(array.dtype, np.number):
            raise RequestError(f"the array must be numeric, got dtype {array.dtype}")
        return _check_batch(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))
    if content_type == JSON:
        try:
            payload = json.loads(request_body)
        except (ValueError, UnicodeDecodeError) as error:
            raise RequestError(f"body is not valid JSON ({error})") from error
        instances = payload.get("instances") if isinstance(payload, dict) else payload
        if not isinstance(instances, list) or not instances:
            raise RequestError('JSON body must be {"instances": [...]} or a non-empty list')
        if len(instances) > MAX_BATCH:
            raise RequestError(f"a request must hold 1 to {MAX_BATCH} inputs, got {len(instances)}")
        tensors = [_instance_to_tensor(instance, transform) for instance in instances]
        if len({tuple(t.shape) for t in tensors}) > 1:
            raise RequestError("all array instances in one request must have the same shape")
        return _check_batch(torch.stack(tensors))
    if content_type in IMAGE_TYPES:
        return _check_batch(_decode_image(request_body, transform))
    raise RequestError(f"unsupported Content-Type {request_content_type!r}; send one of "
                       f"{', '.join((NPY, JSON) + IMAGE_TYPES)}", status_code=415)


def predict_fn(input_data, model):
    with torch.no_grad():
        logits = model["model"](input_data.to(model["device"]))
        probabilities = torch.softmax(logits.float(), dim=1).cpu()
    return {"probabilities": probabilities, "classes": model["info"]["classes"]}


def output_fn(prediction, accept=JSON):
    accept = (accept or JSON).split(";")[0].strip().lower()
    probabilities, classes = prediction["probabilities"], prediction["classes"]
    if accept == NPY:
        buffer = io.BytesIO()
        np.save(buffer, probabilities.numpy())
        return buffer.getvalue(), NPY
    if accept not in (JSON, "*/*"):
        raise RequestError(f"unsupported Accept {accept!r}; ask for {JSON} or {NPY}", status_code=406)
    top = torch.topk(probabilities, k=min(TOP_K, probabilities.shape[1]), dim=1)
    predictions = [
        [{"index": int(i), "breed": classes[int(i)], "probability": round(float(p), 6)}
         for p, i in zip(row_p, row_i)]
        for row_p, row_i in zip(top.values, top.indices)
    ]
    return json.dumps({"predictions": predictions}, ensure_ascii=False), JSON
