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
import math
import os
from http import HTTPStatus

import classifier
import numpy as np
import torch
from job_contract import IMAGE_TYPES, JSON, NPY, error_body  # the endpoint's side of the job contract
from PIL import Image, UnidentifiedImageError

MAX_BATCH = 256  # requests carrying more inputs than this are refused; split them client side
TOP_K = int(os.environ.get("TOP_K", "5"))
# Limits checked before the work they guard: an image's pixel count before it is decoded (a 177-byte PNG
# header can claim 30000×30000), an npy array's shape and dtype before anything is allocated.
MAX_IMAGE_PIXELS = int(os.environ.get("MAX_IMAGE_PIXELS", "40000000"))
MAX_INPUT_VALUES = int(os.environ.get("MAX_INPUT_VALUES", str(3 * MAX_IMAGE_PIXELS)))  # N×3×H×W of one request
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # PIL's own bomb check (it raises at twice this) agrees
ANSWER_TYPES = {JSON: JSON, NPY: NPY, "application/*": JSON, "*/*": JSON}


try:  # SageMaker's inference toolkit answers a handler error's status only for its own error class
    from sagemaker_inference.errors import BaseInferenceToolkitError as HandlerError
except ImportError:  # the local server (dogbreed.serving.server), which reads the same three attributes

    class HandlerError(Exception):
        def __init__(self, status_code, message, phrase):
            super().__init__(status_code, message, phrase)
            self.status_code, self.message, self.phrase = status_code, message, phrase


try:
    # The toolkit decodes a JSON or CSV body as UTF-8 before any handler runs, so a body that is not
    # UTF-8 ended in a 500 with its traceback. With its list of such types empty, every body reaches
    # input_fn as the client sent it, and a bad one gets the same 400 as on the local server.
    from sagemaker_inference import content_types as _toolkit_content_types

    _toolkit_content_types.UTF8_TYPES[:] = []
except ImportError:
    pass


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
    model.to(memory_format=torch.channels_last)  # NHWC convolutions: ~20 % faster on a CPU, more on a GPU
    _served["transform"] = classifier.eval_transform(info["preprocessing"])
    return {"model": model, "info": info, "device": device}


def _too_many_pixels(width, height) -> RequestError:
    return RequestError(
        f"the image is {width}×{height} = {width * height:,} pixels, over this endpoint's limit of "
        f"{MAX_IMAGE_PIXELS:,}: send it smaller"
    )


def _decode_image(data: bytes, transform) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise _too_many_pixels(image.width, image.height)
            return transform(image.convert("RGB"))
    except RequestError:
        raise
    except Image.DecompressionBombError as error:  # PIL's check, in formats whose size it learns late
        raise RequestError(f"the image has too many pixels for this endpoint (limit {MAX_IMAGE_PIXELS:,})") from error
    except UnidentifiedImageError as error:  # its text names a Python object, not the problem
        raise RequestError("could not decode the image: not a format PIL reads (JPEG, PNG, ...)") from error
    except Exception as error:  # hostile or broken files raise many kinds (OSError, SyntaxError, struct.error …)
        raise RequestError("could not decode the image: the file is damaged or not a complete image") from error


def _instance_to_tensor(instance, transform) -> torch.Tensor:
    if isinstance(instance, dict):
        if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
            raise RequestError('an object instance must be {"b64": "<base64 image>"}')
        instance = instance["b64"]
    if isinstance(instance, str):
        try:
            data = base64.b64decode(instance, validate=True)
        except (binascii.Error, ValueError) as error:
            raise RequestError(f"an instance is a string but not valid base64 ({error})") from error
        return _decode_image(data, transform)
    if not isinstance(instance, list):
        raise RequestError('an instance must be a base64 image, {"b64": ...} or a 3×H×W array of numbers')
    try:
        array = np.asarray(instance, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as error:  # ragged, strings inside, 10**400, > 64 dims
        raise RequestError(
            "an array instance must be a 3×H×W nested list of numbers, every row the same length"
        ) from error
    if array.ndim != 3 or array.shape[0] != 3:
        raise RequestError(f"an array instance must be 3×H×W (normalised RGB), got shape {list(array.shape)}")
    return torch.from_numpy(array)


def _load_npy(body: bytes) -> np.ndarray:
    """An .npy body, its header checked before anything is allocated: a numeric dtype, a 3- or 4-d shape
    within MAX_INPUT_VALUES, and a body as long as the shape says (a header may claim 112 GiB)."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
    except Exception as error:  # the header is a Python literal: a hostile one raises ValueError, SyntaxError …
        raise RequestError("body is not a .npy array (its header does not parse)") from error
    if dtype.hasobject or dtype.kind not in "biuf":
        raise RequestError(f"the array must hold numbers (integer or float), got dtype {dtype}")
    if len(shape) not in (3, 4):
        raise RequestError(f"expected an N×3×H×W array, got shape {list(shape)}")
    values = math.prod(shape)
    if values > MAX_INPUT_VALUES:
        raise RequestError(f"the array holds {values:,} values, over this endpoint's limit of {MAX_INPUT_VALUES:,}")
    if len(body) - stream.tell() != values * dtype.itemsize:
        raise RequestError(
            f"the .npy body holds {len(body) - stream.tell():,} bytes of data, but its header "
            f"({list(shape)}, {dtype}) says {values * dtype.itemsize:,}"
        )
    array = np.frombuffer(body, dtype=dtype, count=values, offset=stream.tell())
    return array.reshape(shape, order="F" if fortran_order else "C")


def _check_batch(batch: torch.Tensor) -> torch.Tensor:
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise RequestError(f"expected an N×3×H×W array, got shape {list(batch.shape)}")
    if not 1 <= batch.shape[0] <= MAX_BATCH:
        raise RequestError(f"a request must hold 1 to {MAX_BATCH} inputs, got {batch.shape[0]}")
    if batch.shape[2] * batch.shape[3] > MAX_IMAGE_PIXELS:
        raise _too_many_pixels(batch.shape[3], batch.shape[2])
    if batch.numel() > MAX_INPUT_VALUES:
        raise RequestError(
            f"the request holds {batch.numel():,} values, over this endpoint's limit of {MAX_INPUT_VALUES:,}"
        )
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
        array = _load_npy(request_body)  # a read-only view of the body: the copy is the model's input
        return _check_batch(torch.from_numpy(np.array(array, dtype=np.float32)))
    if content_type == JSON:
        try:
            payload = json.loads(request_body)
        except RecursionError as error:
            raise RequestError("body is JSON nested too deeply") from error
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
    raise RequestError(
        f"unsupported Content-Type {request_content_type!r}; send one of {', '.join((NPY, JSON) + IMAGE_TYPES)}",
        status_code=415,
    )


def predict_fn(input_data, model):
    with torch.inference_mode():
        logits = model["model"](input_data.to(model["device"]).contiguous(memory_format=torch.channels_last))
        probabilities = torch.softmax(logits.float(), dim=1).cpu()
    return {"probabilities": probabilities, "classes": model["info"]["classes"]}


def answer_type(accept) -> str:
    """The answer's type for an Accept header (a list, with q-values): JSON or npy, the client's
    favourite; a wildcard (*/*, application/*) means JSON; a type named outright wins a tie with one."""
    best, best_rank = None, (0.0, 0)
    for entry in (accept or JSON).split(","):
        media, *parameters = [field.strip().lower() for field in entry.split(";")]
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        rank = (quality, 0 if "*" in media else 1)
        if media in ANSWER_TYPES and quality > 0 and rank > best_rank:
            best, best_rank = ANSWER_TYPES[media], rank
    if best is None:
        raise RequestError(f"unsupported Accept {accept!r}; ask for {JSON} or {NPY}", status_code=406)
    return best


def output_fn(prediction, accept=JSON):
    accept = answer_type(accept)
    probabilities, classes = prediction["probabilities"], prediction["classes"]
    if accept == NPY:
        buffer = io.BytesIO()
        np.save(buffer, probabilities.numpy())
        return buffer.getvalue(), NPY
    top = torch.topk(probabilities, k=min(TOP_K, probabilities.shape[1]), dim=1)
    predictions = [
        [{"index": int(i), "breed": classes[int(i)], "probability": round(float(p), 6)} for p, i in zip(row_p, row_i)]
        for row_p, row_i in zip(top.values, top.indices)
    ]
    return json.dumps({"predictions": predictions}, ensure_ascii=False), JSON
