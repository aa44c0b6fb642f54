"""The local endpoint's web app, under the SageMaker serving contract: GET /ping, POST /invocations.

It loads the handler module the model artifact carries (SM_MODEL_DIR/code/$SAGEMAKER_PROGRAM, as
SageMaker's PyTorch containers do) and calls its model_fn / input_fn / predict_fn / output_fn.
Run by waitress: `python -m waitress --call dogbreed.serving.server:create_app` with SM_MODEL_DIR set.

Concurrent requests are batched (MAX_BATCH_SIZE, MAX_BATCH_DELAY_MS: TorchServe's two settings): each
request is decoded and checked by input_fn in its own thread, so a bad one fails alone; the valid
inputs of requests in flight together go through predict_fn as one forward pass; output_fn answers each.
"""

import importlib.util
import logging
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path

import job_contract as contract
from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

log = logging.getLogger("waitress")
# SageMaker's real-time endpoints' limit: a request that works here works there (larger: 413, from
# waitress before the body is read when it says its length, and from here otherwise)
MAX_BODY_BYTES = 6_291_456


class Batcher:
    """One forward pass for the inputs of requests in flight together.

    A request's thread calls predict(inputs) and waits. The batching thread takes the oldest waiting
    inputs and adds others of the same shape, up to max_size inputs; it waits for more, at most
    max_delay_s after the first, only while other requests are still being decoded: a lone client
    waits for nobody. A request of more than max_size inputs is a batch of its own.
    """

    def __init__(self, predict_fn, model, max_size: int, max_delay_s: float):
        self.predict_fn, self.model = predict_fn, model
        self.max_size, self.max_delay_s = max_size, max_delay_s
        self.waiting = deque()
        self.decoding = 0  # requests past the door, not yet waiting here
        self.changed = threading.Condition()
        threading.Thread(target=self._serve, name="batcher", daemon=True).start()

    def arriving(self):
        with self.changed:
            self.decoding += 1

    def decoded(self, inputs=None):
        """The request's inputs (None: its input_fn failed) → its prediction, once its batch ran."""
        entry = {"inputs": inputs, "done": threading.Event()}
        with self.changed:
            self.decoding -= 1
            if inputs is not None:
                self.waiting.append(entry)
            self.changed.notify_all()
        if inputs is None:
            return None
        entry["done"].wait()
        if "error" in entry:
            raise entry["error"]
        return entry["prediction"]

    def _take_batch(self) -> list:
        with self.changed:
            while not self.waiting:
                self.changed.wait()
            deadline = time.monotonic() + self.max_delay_s
            while True:
                first = self.waiting[0]
                shape = tuple(first["inputs"].shape[1:])
                batch, size = [], 0
                for entry in self.waiting:
                    n = len(entry["inputs"])
                    if tuple(entry["inputs"].shape[1:]) == shape and (not batch or size + n <= self.max_size):
                        batch.append(entry)
                        size += n
                left = deadline - time.monotonic()
                if size >= self.max_size or self.decoding == 0 or left <= 0:
                    taken = {id(entry) for entry in batch}  # by identity: == on entries compares their tensors
                    self.waiting = deque(entry for entry in self.waiting if id(entry) not in taken)
                    return batch
                self.changed.wait(left)

    def _serve(self):
        import torch

        while True:
            batch = self._take_batch()
            try:
                prediction = self.predict_fn(torch.cat([entry["inputs"] for entry in batch]), self.model)
                start = 0
                for entry in batch:
                    n = len(entry["inputs"])
                    entry["prediction"] = _rows(prediction, start, start + n)
                    start += n
            except Exception as error:
                for entry in batch:
                    entry["error"] = error
            for entry in batch:
                entry["done"].set()


def _rows(prediction, start, stop):
    """A batch's prediction cut to one request's rows: every tensor (or array) whose first dimension is
    the batch is sliced; everything else (the class names) is shared."""
    if isinstance(prediction, dict):
        return {k: _rows(v, start, stop) for k, v in prediction.items()}
    if hasattr(prediction, "shape") and len(prediction.shape) > 0:
        return prediction[start:stop]
    return prediction


def load_handler(model_dir: Path):
    code_dir = model_dir / "code"
    program = os.environ.get("SAGEMAKER_PROGRAM", "inference.py")
    sys.path.insert(0, str(code_dir))  # its sibling modules (classifier.py) import as in the container
    spec = importlib.util.spec_from_file_location(Path(program).stem, code_dir / program)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def error_response(status: int, message: str) -> Response:
    """{"error": "<one line>"}: the handler's error_body, for the server's own errors too."""
    return Response(contract.error_body(message), status=status, mimetype=contract.JSON)


def create_app(model_dir=None) -> Flask:
    model_dir = Path(model_dir or os.environ["SM_MODEL_DIR"])
    handler = load_handler(model_dir)
    model = handler.model_fn(str(model_dir))
    app = Flask("dogbreed-endpoint")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    max_batch_size = int(os.environ.get("MAX_BATCH_SIZE", "1"))
    batcher = (
        Batcher(handler.predict_fn, model, max_batch_size, int(os.environ.get("MAX_BATCH_DELAY_MS", "10")) / 1000)
        if max_batch_size > 1
        else None
    )

    @app.get("/ping")
    def ping():
        return Response("", status=200)

    @app.post("/invocations")
    def invocations():
        accept = request.headers.get("Accept") or contract.JSON
        try:
            body = request.get_data()
        except RequestEntityTooLarge:
            return error_response(
                413, f"the request body is over {app.config['MAX_CONTENT_LENGTH']} bytes: send fewer inputs per request"
            )
        if batcher is not None:
            batcher.arriving()
        try:
            try:
                data = handler.input_fn(body, request.content_type)
            except BaseException:
                if batcher is not None:
                    batcher.decoded(None)
                raise
            prediction = handler.predict_fn(data, model) if batcher is None else batcher.decoded(data)
            body, content_type = handler.output_fn(prediction, accept)
        except Exception as error:  # the handler's own 4xx errors carry status_code
            status = getattr(error, "status_code", 500)
            if status >= 500:  # ours, not the client's: the log has the traceback, the client no internals
                log.exception("invocation failed")
                return error_response(
                    500, "internal error while serving the request (the endpoint's log has the details)"
                )
            if not isinstance(getattr(error, "message", None), str):  # a 4xx error of another kind
                return error_response(status, str(error))
            # the handler's own body (error.message), as SageMaker's toolkit sends it
            return Response(error.message, status=status, mimetype=contract.JSON)
        return Response(body, status=200, mimetype=content_type)

    return app
