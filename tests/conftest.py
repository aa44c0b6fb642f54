import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
os.environ.setdefault("PYTHONPATH", str(REPO / "workflow"))


def jpeg_bytes(colour=(200, 30, 30), size=(48, 40), mode="RGB", fmt="JPEG"):
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(path, colour=(200, 30, 30), size=(48, 40), mode="RGB", fmt="JPEG"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(colour, size, mode, fmt))
    return path


@pytest.fixture(scope="session", autouse=True)
def sagemaker_sdk_quiet(tmp_path_factory):
    """The SageMaker SDK's telemetry off (through its own config file) and its v2 banner silenced."""
    config = tmp_path_factory.mktemp("sagemaker") / "config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(config)
    os.environ["SAGEMAKER_SUPPRESS_V2_WARNING"] = "1"


TINY_CLASSES = [("001.Red_Circle", "circle", (200, 40, 40)),
                ("002.Green_Square", "square", (40, 170, 60)),
                ("003.Blue_Triangle", "triangle", (40, 70, 200))]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small dogImages-like tree: 3 classes, {train: 12, valid: 4, test: 4} per class, plus one corrupt file."""
    from dogbreed import demo_data
    root = tmp_path_factory.mktemp("tiny")
    return demo_data.generate(root, seed=1, classes=TINY_CLASSES, per_split={"train": 12, "valid": 4, "test": 4})


@pytest.fixture(scope="session")
def tiny_channels(tiny_dataset, tmp_path_factory):
    """The tiny dataset through the prepare stage: (channels folder, prepare output folder)."""
    from dogbreed import prepare
    out = tmp_path_factory.mktemp("prepared")
    prepare.prepare(tiny_dataset, out)
    return out / "channels", out


def copy_workflow(target: Path) -> Path:
    """The workflow's own files in a scratch folder, so a test can edit them and run Snakemake there."""
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, target / name)
    for name in ("workflow", "scripts", "config"):
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def snakemake(workdir, *args, check=True, timeout=900, env=None):
    result = subprocess.run([str(VENV_BIN / "snakemake"), "--cores", "2", *args], cwd=workdir,
                            capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 API (moto in server mode) on 127.0.0.1, with throwaway credentials in the environment,
    as the standard AWS chain reads them. Yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL_S3=url, AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def bucket(moto_server, request):
    import boto3

    name = "dogs-" + request.node.name.lower().replace("_", "-")[:40]
    boto3.client("s3").create_bucket(Bucket=name)
    return name
