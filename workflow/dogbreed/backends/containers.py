"""What SageMaker local mode needs from this machine: a Docker engine, and the framework images under
the ECR URIs the SDK resolves (built as stand-ins by `make container-images`, or pulled from ECR).

`python -m dogbreed.backends.containers image-uris config.yaml config/local_container.yaml` prints
"<scope> <uri>" lines: what containers/build.sh tags its images with.
"""

import sys
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
START_ENGINE = (
    "`make container-images` installs and starts one (Debian, as root) and builds the images; "
    "elsewhere start Docker Engine or Docker Desktop"
)


class ContainerSetupError(RuntimeError):
    """The Docker engine or a framework image is missing or out of reach; the message says what to do."""


class EngineNotRunning(ContainerSetupError):
    """No Docker engine answers (as opposed to one this user may not use)."""


def local_mode_settings(settings: dict) -> dict:
    """backends.local_container with the schema's defaults filled in (for callers outside Snakemake)."""
    schema = yaml.safe_load(SCHEMA.read_text())
    properties = schema["properties"]["backends"]["properties"]["local_container"]["properties"]
    return {**{k: v["default"] for k, v in properties.items() if "default" in v}, **(settings or {})}


def framework_image(region, version, py_version, instance_type, scope) -> str:
    """The PyTorch framework image (DLC) for scope "training" or "inference" on instance_type: the SDK's own ECR URI
    (sagemaker-core's image config; no AWS request)."""
    from sagemaker.core import image_uris

    return image_uris.retrieve(
        "pytorch",
        region=region,
        version=str(version),
        py_version=py_version,
        instance_type=instance_type,
        image_scope=scope,
    )


def image_uri(settings: dict, scope: str, gpu: bool) -> str:
    """The image local mode runs for scope "training" or "inference": the configured one, else the
    SDK's ECR URI for the configured framework and Python versions."""
    configured = settings.get(f"{scope}_image")
    if configured:
        return configured
    version = settings["framework_version" if scope == "training" else "inference_framework_version"]
    instance_type = "ml.g4dn.xlarge" if gpu else "ml.m5.xlarge"
    return framework_image(settings["region"], version, settings["py_version"], instance_type, scope)


def torch_distributed_version(framework_version) -> tuple:
    """(the full version SageMaker's torch_distributed launcher takes for framework_version, the full versions it
    takes): "2.7" → "2.7.1" by the SDK's own aliases for the PyTorch training images (padding with zeros would name
    releases without an image); the version is None when the launcher does not take it ("2.4" is 2.4.0, but
    the launcher takes only 2.4.1)."""
    from sagemaker.core import fw_utils, image_uris

    aliases = image_uris.config_for_framework("pytorch")["training"]["version_aliases"]
    full = aliases.get(str(framework_version), str(framework_version))
    supported = list(fw_utils.TORCH_DISTRIBUTED_GPU_SUPPORTED_FRAMEWORK_VERSIONS)
    return (full if full in supported else None), supported


def docker_client():
    """A client of a running engine, or ContainerSetupError saying how to start one."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
        return client
    except Exception as error:
        if "permission denied" in str(error).lower():
            raise ContainerSetupError(
                f"a Docker engine runs, but this user may not use it ({error}): add the user "
                f"to the docker group (then log in again), or run as root"
            ) from None
        raise EngineNotRunning(
            f"backend local_container needs a running Docker engine, and none answers ({error}): {START_ENGINE}"
        ) from None


def require_image(client, uri: str):
    """Refuse before local mode would try to pull from ECR (which needs AWS credentials and a network)."""
    import docker

    try:
        client.images.get(uri)
    except docker.errors.ImageNotFound:
        raise ContainerSetupError(
            f"image {uri} is not on this machine: `make container-images` builds stand-ins under that name; with "
            f"access to ECR, `aws ecr get-login-password | docker login --username AWS --password-stdin "
            f"{uri.split('/')[0]}` and `docker pull {uri}` get the real one; or set "
            f"backends.local_container.training_image / inference_image"
        ) from None


def _merged_settings(config_files):
    settings = {}
    for path in config_files:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        settings.update((loaded.get("backends") or {}).get("local_container") or {})
    return local_mode_settings(settings)


def main(argv):
    if len(argv) < 1 or argv[0] != "image-uris":
        sys.exit("usage: python -m dogbreed.backends.containers image-uris CONFIG.yaml [OVERLAY.yaml ...]")
    settings = _merged_settings(argv[1:])
    for scope in ("training", "inference"):
        for gpu in (False, True):
            print(scope, image_uri(settings, scope, gpu))


if __name__ == "__main__":
    main(sys.argv[1:])
