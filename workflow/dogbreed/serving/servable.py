"""Whether a served artifact (deploy/model.tar.gz) can be served, found out before anything serving now is touched:
start_endpoint and deploy's revive check it, then the backend stops the old endpoint and starts the new one."""

import gzip
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

# what reading a truncated or corrupt gzip'd tar raises (a failed write is not among them: it says so itself)
UNREADABLE = (EOFError, tarfile.TarError, zlib.error, gzip.BadGzipFile)
# the model loaded, the check is done: its process ends without tearing down torch's modules (about a second)
LOAD = (
    "import os, sys; sys.path.insert(0, sys.argv[1] + '/code'); import inference; inference.model_fn(sys.argv[1]);"
    " sys.stdout.flush(); os._exit(0)"
)


class ArtifactError(RuntimeError):
    """A model artifact that cannot be served; the message names the file and the command that remakes it."""


def reading_error(error) -> str:
    """The error in one line (tarfile's says what each compression method found, a line each)."""
    return (
        f"{type(error).__name__}: {' '.join(str(error).split())}"
        if str(error)
        else f"{type(error).__name__}: truncated"
    )


def model_info(model_tar, remake="rerun the package_model rule") -> dict:
    """The artifact's model_info.json (classifier.save_model writes it): arch, classes, preprocessing.
    ArtifactError, naming the file and what to do, when it cannot be read."""
    try:
        with tarfile.open(model_tar) as archive:
            return json.load(archive.extractfile("model_info.json"))
    except (*UNREADABLE, KeyError, ValueError) as error:  # KeyError: no model_info.json; ValueError: not JSON
        raise ArtifactError(
            f"{model_tar} has no readable model_info.json ({reading_error(error)}): make it again with `{remake}`"
        ) from None


def check_servable(model_tar, remake="rerun the package_model rule", timeout=300):
    """Unpack the artifact aside and load its model with its own code/inference.py (model_fn), in a process of its
    own, on the CPU, seeing only the artifact's code. ArtifactError, naming the file and what to do, when it cannot
    be read or its model does not load."""
    untouched = "so nothing was deployed and the endpoint serving now is untouched"
    with tempfile.TemporaryDirectory(prefix="dogbreed-artifact-") as unpacked:
        try:
            with tarfile.open(model_tar) as archive:
                archive.extractall(unpacked, filter="data")
        except UNREADABLE as error:
            raise ArtifactError(
                f"{model_tar} cannot be read ({reading_error(error)}), {untouched}: make it again with `{remake}`"
            ) from None
        if not (Path(unpacked) / "code" / "inference.py").is_file():
            raise ArtifactError(f"{model_tar} holds no code/inference.py, {untouched}: make it again with `{remake}`")
        # the artifact's code alone (not the checkout's, which PYTHONPATH holds), and no GPU a live endpoint may use
        environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
        environment["CUDA_VISIBLE_DEVICES"] = ""
        try:
            loaded = subprocess.run(
                [sys.executable, "-c", LOAD, unpacked], env=environment, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise ArtifactError(f"the model in {model_tar} did not load within {timeout} s, {untouched}") from None
    if loaded.returncode != 0:
        last = (loaded.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ArtifactError(
            f"the model in {model_tar} does not load with its code/inference.py ({last[:300]}), {untouched}: fix "
            f"what that says (the served code is scripts/inference.py; a bad training artifact needs --forcerun "
            f"train) and make it again with `{remake}`"
        )
