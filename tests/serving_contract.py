"""The serving contract every endpoint keeps (DESIGN §2): the same answers to the same requests,
good and bad, through the local server, SageMaker's inference toolkit and SageMaker itself; and the
SageMaker SDK's own clients work against it."""
import base64
import io
import json

import numpy as np
import requests


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def bad_requests(image: bytes, size: int):
    """(what, Content-Type, body, Accept, expected status): client mistakes inference.py refuses."""
    good_json = json.dumps({"instances": [base64.b64encode(image).decode()]}).encode()
    return [
        ("JSON that does not parse", "application/json", b'{"instances": [', None, 400),
        ("an empty instance list", "application/json", b'{"instances": []}', None, 400),
        ("a string that is not base64", "application/json", b'{"instances": ["***"]}', None, 400),
        ("a 2-d array instance", "application/json", b'{"instances": [[[0.5, 0.5], [0.5, 0.5]]]}', None, 400),
        ("bytes that are no image", "image/jpeg", b"this is not a jpeg", None, 400),
        ("an npy body that is not npy", "application/x-npy", b"\x93NUMPY garbage", None, 400),
        ("an npy array of the wrong rank", "application/x-npy", npy(np.zeros((4, 4), np.float32)), None, 400),
        ("an npy image below 16 px", "application/x-npy", npy(np.zeros((1, 3, 8, 8), np.float32)), None, 400),
        ("an npy array holding NaN", "application/x-npy", npy(np.full((1, 3, size, size), np.nan, np.float32)), None, 400),
        ("an unsupported Content-Type", "text/csv", b"1,2,3", None, 415),
        ("an unsupported Accept", "application/json", good_json, "text/html", 406),
    ]


def good_requests(image: bytes, size: int):
    """(what, Content-Type, body, Accept) that every endpoint answers with 200."""
    rng = np.random.default_rng(0)
    return [
        ("base64 images in JSON", "application/json",
         json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}] * 2}).encode(), "application/json"),
        ("a normalised npy batch", "application/x-npy", npy(rng.normal(size=(2, 3, size, size)).astype(np.float32)),
         "application/json"),
        ("a raw JPEG", "image/jpeg", image, "application/json"),
        ("a raw image, any answer type", "application/x-image", image, "*/*"),
        ("probabilities as npy", "application/x-npy", npy(rng.normal(size=(1, 3, size, size)).astype(np.float32)),
         "application/x-npy"),
    ]


def post(url, content_type, body, accept):
    headers = {k: v for k, v in (("Content-Type", content_type), ("Accept", accept)) if v}
    return requests.post(url + "/invocations", data=body, headers=headers, timeout=120)


def first_line(response) -> str:
    return response.text.splitlines()[0] if response.text else ""


def decoded(response):
    """A 200 answer as comparable data: the JSON predictions, or the npy probability matrix."""
    if response.headers["Content-Type"].startswith("application/x-npy"):
        return np.load(io.BytesIO(response.content))
    return json.loads(response.text)["predictions"]


def same_answer(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.allclose(a, b, atol=1e-4)
    return (len(a) == len(b) and all([p["index"] for p in x] == [p["index"] for p in y] and
                                     np.allclose([p["probability"] for p in x], [p["probability"] for p in y], atol=1e-4)
                                     for x, y in zip(a, b)))


def sdk_predictions(port: int, image: bytes, size: int):
    """The SageMaker SDK's own clients against the endpoint on 127.0.0.1:port (LocalSession's
    serving_port): Predictor with its JSON and raw-image serializers, and the default
    PyTorchPredictor (npy in, npy out: how the original project queried its endpoint)."""
    import boto3
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.local import LocalSession
    from sagemaker.predictor import Predictor
    from sagemaker.pytorch import PyTorchPredictor
    from sagemaker.serializers import IdentitySerializer, JSONSerializer

    session = LocalSession(boto_session=boto3.Session(region_name="us-east-1", aws_access_key_id="local",
                                                      aws_secret_access_key="local"))
    session.config = {"local": {"local_code": True, "serving_port": port}}
    predictor = Predictor("dogbreed", sagemaker_session=session, serializer=JSONSerializer(), deserializer=JSONDeserializer())
    as_json = predictor.predict({"instances": [{"b64": base64.b64encode(image).decode()}]})["predictions"]
    predictor.serializer = IdentitySerializer("image/jpeg")
    as_image = predictor.predict(image)["predictions"]
    batch = np.random.default_rng(1).normal(size=(3, 3, size, size)).astype(np.float32)
    as_npy = PyTorchPredictor("dogbreed", sagemaker_session=session).predict(batch)
    return {"json": as_json, "image": as_image, "npy": as_npy}
