"""The serving contract every endpoint keeps (docs/architecture.md §2): the same answers to the same requests,
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
        (
            "an npy array holding NaN",
            "application/x-npy",
            npy(np.full((1, 3, size, size), np.nan, np.float32)),
            None,
            400,
        ),
        ("an unsupported Content-Type", "text/csv", b"1,2,3", None, 415),
        ("an unsupported Accept", "application/json", good_json, "text/html", 406),
    ]


def good_requests(image: bytes, size: int):
    """(what, Content-Type, body, Accept) that every endpoint answers with 200."""
    rng = np.random.default_rng(0)
    return [
        (
            "base64 images in JSON",
            "application/json",
            json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}] * 2}).encode(),
            "application/json",
        ),
        (
            "a normalised npy batch",
            "application/x-npy",
            npy(rng.normal(size=(2, 3, size, size)).astype(np.float32)),
            "application/json",
        ),
        ("a raw JPEG", "image/jpeg", image, "application/json"),
        ("a raw image, any answer type", "application/x-image", image, "*/*"),
        (
            "probabilities as npy",
            "application/x-npy",
            npy(rng.normal(size=(1, 3, size, size)).astype(np.float32)),
            "application/x-npy",
        ),
    ]


def post(url, content_type, body, accept):
    headers = {k: v for k, v in (("Content-Type", content_type), ("Accept", accept)) if v}
    return requests.post(url + "/invocations", data=body, headers=headers, timeout=120)


def concurrent_mixed_requests(url, image: bytes, size: int, rounds=3):
    """Good requests of every content type and answer type, and bad ones, sent all at once (rounds
    times over): a server that batches them (the local one) or serves them one by one (TorchServe at
    batch size 1) gives each its own answer, the same as when it is sent alone. Returns the failures."""
    from concurrent.futures import ThreadPoolExecutor

    cases = [(what, ct, body, accept, 200) for what, ct, body, accept in good_requests(image, size)]
    cases += bad_requests(image, size)[:6]
    alone = {what: post(url, ct, body, accept) for what, ct, body, accept, _ in cases}
    failures = []
    with ThreadPoolExecutor(len(cases)) as pool:
        for _ in range(rounds):
            answers = list(pool.map(lambda case: (case, post(url, *case[1:4])), cases))
            for (what, _, _, _, status), answer in answers:
                if answer.status_code != status:
                    failures.append((what, answer.status_code, answer.text[:300]))
                elif status == 200 and not (
                    answer.headers["Content-Type"] == alone[what].headers["Content-Type"]
                    and same_answer(decoded(answer), decoded(alone[what]))
                ):
                    failures.append((what, "another answer than when sent alone"))
                elif status != 200 and first_line(answer) != first_line(alone[what]):
                    failures.append((what, answer.text[:300]))
    return failures


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
    return len(a) == len(b) and all(
        [p["index"] for p in x] == [p["index"] for p in y]
        and np.allclose([p["probability"] for p in x], [p["probability"] for p in y], atol=1e-4)
        for x, y in zip(a, b)
    )


def sdk_predictions(port: int, image: bytes, size: int):
    """The SageMaker SDK's own clients against the endpoint on 127.0.0.1:port (LocalSession's serving_port): its
    local runtime client with the SDK's JSON and raw-image serializers, and with its NumPy serializer and
    deserializer (npy in, npy out: how the original project's PyTorchPredictor queried its endpoint)."""
    import boto3
    from sagemaker.core.deserializers import JSONDeserializer, NumpyDeserializer
    from sagemaker.core.local.local_session import LocalSession
    from sagemaker.core.serializers import IdentitySerializer, JSONSerializer, NumpySerializer

    session = LocalSession(
        boto_session=boto3.Session(region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
    )
    session.config = {"local": {"local_code": True, "serving_port": port}}

    def predict(data, serializer, deserializer):
        answer = session.sagemaker_runtime_client.invoke_endpoint(
            EndpointName="dogbreed",
            Body=serializer.serialize(data),
            ContentType=serializer.CONTENT_TYPE,
            Accept=deserializer.ACCEPT[0],
        )
        return deserializer.deserialize(answer["Body"], answer["ContentType"])

    as_json = predict({"instances": [{"b64": base64.b64encode(image).decode()}]}, JSONSerializer(), JSONDeserializer())
    as_image = predict(image, IdentitySerializer("image/jpeg"), JSONDeserializer())
    batch = np.random.default_rng(1).normal(size=(3, 3, size, size)).astype(np.float32)
    as_npy = predict(batch, NumpySerializer(), NumpyDeserializer())
    return {"json": as_json["predictions"], "image": as_image["predictions"], "npy": as_npy}


def _png_header(width, height) -> bytes:
    """The first bytes of a PNG claiming width×height (signature and IHDR, with a valid CRC)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def _jpeg_header(width, height) -> bytes:
    """A JPEG start claiming width×height in its SOF0 segment, and nothing after."""
    import struct

    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"


def _npy_with_header(header: str, body: bytes = b"\x00" * 16, version=b"\x01\x00") -> bytes:
    text = header.encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY" + version + len(text).to_bytes(2, "little") + text + body


def hostile_requests(image: bytes, size: int, seed=0):
    """(what, Content-Type, body, Accept): bounded fuzz over what a careless or hostile client sends.
    Every one must get a 2xx or a 4xx whose first line is {"error": ...}, never a 5xx or internals."""
    rng = np.random.default_rng(seed)
    b64 = base64.b64encode(image).decode()
    cases = []
    # JSON nested deep (RecursionError), in objects and arrays, at and around the interpreter's limit
    for depth in (10, 100, 500, 999, 1000, 1001, 3000, 20000, 200000):
        cases.append((f"JSON arrays nested {depth} deep", JSON_TYPE, b"[" * depth + b"]" * depth, None))
        cases.append((f"JSON objects nested {depth} deep", JSON_TYPE, b'{"a":' * depth + b"1" + b"}" * depth, None))
        cases.append(
            (f"instances nested {depth} deep", JSON_TYPE, b'{"instances": ' + b"[" * depth + b"]" * depth + b"}", None)
        )
    # instances of every wrong shape
    odd_instances = [
        {},
        {"b64": 1},
        {"b64": None},
        {"b64": b64, "x": 1},
        {"x": b64},
        None,
        True,
        1,
        1.5,
        [],
        [[]],
        [[[]]],
        [[[1, 2], [3]]],
        [[[1, 2], [3, 4]], [[5, 6]], [[7, 8], [9, 10]]],
        [[["a", "b"]]],
        [[[None]]],
        [[[True]]],
        [[[{"b64": b64}]]],
        "",
        "====",
        "abc",
        b64[:10],
        "data:image/png;base64," + b64[:40],
    ]
    for instance in odd_instances:
        cases.append(
            (f"instance {json.dumps(instance)[:40]}", JSON_TYPE, json.dumps({"instances": [instance]}).encode(), None)
        )
    for text in ("1" + "0" * 400, "1e400", "-1e400", "NaN", "Infinity", "-0"):
        body = ('{"instances": [[[[' + text + ", 1], [1, 1]], [[1, 1], [1, 1]], [[1, 1], [1, 1]]]]}").encode()
        cases.append((f"the number {text[:12]}", JSON_TYPE, body, None))
    for dims in (4, 33, 64, 65, 100):
        cases.append(
            (
                f"an array of {dims} dimensions",
                JSON_TYPE,
                json.dumps({"instances": [[1] if dims < 2 else eval("[" * dims + "1" + "]" * dims)]}).encode(),
                None,
            )
        )
    for payload in (
        [],
        {},
        {"instances": {}},
        {"instances": None},
        {"instances": "x"},
        {"instances": [b64] * 257},
        {"inputs": [b64]},
        1,
        "x",
        None,
        True,
    ):
        cases.append((f"payload {json.dumps(payload)[:40]}", JSON_TYPE, json.dumps(payload).encode(), None))
    for encoding in ("utf-16", "utf-32", "latin-1"):
        cases.append(
            (f"JSON in {encoding}", JSON_TYPE, json.dumps({"instances": ["é" + b64[:8]]}).encode(encoding), None)
        )
    # images whose header claims more pixels than anyone should decode, raw and as base64 in JSON
    for width, height in ((30000, 30000), (65535, 65535), (100000, 100), (1, 2**31 - 1), (7000, 7000), (0, 0), (1, 1)):
        for what, header in (
            ("PNG", _png_header(width, height)),
            ("JPEG", _jpeg_header(min(width, 65535), min(height, 65535))),
        ):
            for content_type in ("image/png", "image/jpeg", "application/x-image"):
                cases.append(
                    (f"a {what} header claiming {width}x{height} as {content_type}", content_type, header, None)
                )
            cases.append(
                (
                    f"a {what} header claiming {width}x{height} in JSON",
                    JSON_TYPE,
                    json.dumps({"instances": [{"b64": base64.b64encode(header).decode()}]}).encode(),
                    None,
                )
            )
    for cut in (8, 33, 100, len(image) // 2, len(image) - 2):
        cases.append((f"an image cut at {cut} bytes", "image/jpeg", image[:cut], None))
    # npy headers that lie, or hold what is not a number
    for shape in (
        "(1, 3, 100000, 100000)",
        "(1, 3, 16, 16)",
        "(2, 2)",
        "(1, 3, 8, 8)",
        "(10**9,)",
        "(-1, 3, 16, 16)",
        "(1, 3, 1, 1000000)",
        "()",
        "(1, 3, 16, 16, 1, 1)",
        "(0, 3, 16, 16)",
    ):
        cases.append(
            (
                f"an npy header claiming shape {shape}",
                NPY_TYPE,
                _npy_with_header(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"),
                None,
            )
        )
    for dtype in ("<m8", "<M8[s]", "|O", "<c8", "|S4", "<U2", "|V8", "<f2", "<i8", ">f4", "|b1", "<f16", "xyz"):
        cases.append(
            (
                f"an npy of dtype {dtype}",
                NPY_TYPE,
                _npy_with_header(
                    f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': (1, 3, 16, 16), }}",
                    b"\x00" * 16 * 16 * 3 * 16,
                ),
                None,
            )
        )
    for header in (
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 16, 16), ",
        "{{{{",
        "[(1,",
        "{'descr': '<f4'}",
        "{'descr': __import__('os').getcwd(), 'fortran_order': False, 'shape': (1,)}",
        "'" * 50,
        "",
        "{" * 5000,
    ):
        cases.append((f"an npy header {header[:30]!r}", NPY_TYPE, _npy_with_header(header), None))
    for version in (b"\x02\x00", b"\x03\x00", b"\x09\x09", b"\x00\x00"):
        cases.append(
            (
                f"an npy of version {version!r}",
                NPY_TYPE,
                _npy_with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 16, 16), }", version=version
                ),
                None,
            )
        )
    for cut in (0, 3, 6, 8, 10, 40):
        cases.append((f"an npy cut at {cut} bytes", NPY_TYPE, npy(np.zeros((1, 3, 16, 16), np.float32))[:cut], None))
    # random bytes under every content type, and content types nobody serves
    for content_type in (
        JSON_TYPE,
        NPY_TYPE,
        "image/jpeg",
        "image/png",
        "application/x-image",
        "text/csv",
        "",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/x-npy; q=1",
        "multipart/form-data; boundary=x",
        "image/*",
    ):
        for length in (0, 1, 17, 4096, 100_000):
            body = rng.integers(0, 256, size=length, dtype=np.uint8).tobytes()
            cases.append((f"{length} random bytes as {content_type or 'no type'}", content_type or None, body, None))
    # Accept headers: lists, q-values, wildcards, nonsense
    good = json.dumps({"instances": [{"b64": b64}]}).encode()
    for accept in (
        "application/json, */*",
        "text/html,application/json;q=0.9",
        "*/*;q=0.1, application/x-npy",
        "application/*",
        "text/html",
        "application/json;q=0",
        "garbage;;;",
        "application/x-npy;q=abc, application/json",
        "*/*",
        "application/x-npy",
        "text/html;q=1, */*;q=0.01",
        ", ,",
        "application/json;q=1;q=0",
        "image/png",
        "application/x-npy;q=0.5, application/json;q=0.6",
        "APPLICATION/JSON",
        "application/json; charset=utf-8",
    ):
        cases.append((f"Accept {accept!r}", JSON_TYPE, good, accept))
    # valid bodies with a few bytes flipped
    valid_npy = npy(rng.normal(size=(1, 3, size, size)).astype(np.float32))
    for what, content_type, body in (
        ("JSON", JSON_TYPE, good),
        ("npy", NPY_TYPE, valid_npy),
        ("image", "image/jpeg", image),
    ):
        for i in range(15):
            mutated = bytearray(body)
            for position in rng.integers(0, len(body), size=1 + i % 4):
                mutated[position] = int(rng.integers(0, 256))
            cases.append((f"a {what} body with bytes flipped ({i})", content_type, bytes(mutated), None))
    # a body over SageMaker's 6,291,456 bytes
    cases.append(("a body of 6,291,457 bytes", NPY_TYPE, b"\x00" * 6_291_457, None))
    return cases


JSON_TYPE, NPY_TYPE = "application/json", "application/x-npy"
