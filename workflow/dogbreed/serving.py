"""The local endpoint's web app, under the SageMaker serving contract: GET /ping, POST /invocations.

It loads the handler module the model artifact carries (SM_MODEL_DIR/code/$SAGEMAKER_PROGRAM, as
SageMaker's PyTorch containers do) and calls its model_fn / input_fn / predict_fn / output_fn.
Run by waitress: `python -m waitress --call dogbreed.serving:create_app` with SM_MODEL_DIR set.
"""
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

log = logging.getLogger("waitress")
# SageMaker's real-time endpoints' limit: a request that works here works there (larger: 413, from
# waitress before the body is read when it says its length, and from here otherwise)
MAX_BODY_BYTES = 6_291_456


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
    return Response(json.dumps({"error": " ".join(message.split())}), status=status, mimetype="application/json")


def create_app(model_dir=None) -> Flask:
    model_dir = Path(model_dir or os.environ["SM_MODEL_DIR"])
    handler = load_handler(model_dir)
    model = handler.model_fn(str(model_dir))
    app = Flask("dogbreed-endpoint")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.get("/ping")
    def ping():
        return Response("", status=200)

    @app.post("/invocations")
    def invocations():
        accept = request.headers.get("Accept") or "application/json"
        try:
            body = request.get_data()
        except RequestEntityTooLarge:
            return error_response(413, f"the request body is over {app.config['MAX_CONTENT_LENGTH']} bytes: send fewer inputs per request")
        try:
            data = handler.input_fn(body, request.content_type)
            prediction = handler.predict_fn(data, model)
            body, content_type = handler.output_fn(prediction, accept)
        except Exception as error:  # the handler's own 4xx errors carry status_code
            status = getattr(error, "status_code", 500)
            if status >= 500:  # ours, not the client's: the log has the traceback, the client no internals
                log.exception("invocation failed")
                return error_response(500, "internal error while serving the request (the endpoint's log has the details)")
            if not isinstance(getattr(error, "message", None), str):  # a 4xx error of another kind
                return error_response(status, str(error))
            # the handler's own body (error.message), as SageMaker's toolkit sends it
            return Response(error.message, status=status, mimetype="application/json")
        return Response(body, status=200, mimetype=content_type)

    return app
