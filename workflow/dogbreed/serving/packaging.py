"""The served artifact: the training job's model.tar.gz plus code/ with what serving needs from the
source_dir (inference.py and the module it imports), as SageMaker's PyTorchModel repacks it. Editing
inference.py therefore redeploys without retraining.

Only those files: a requirements.txt in code/ would make SageMaker's inference toolkit pip-install it
when the endpoint starts (network needed, slower start, and a pip failure fails the endpoint), and the
training requirements (smdebug, its protobuf pin) have no business on an endpoint."""

import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

from dogbreed.runtime import code_inputs

# inference.py and what it imports from the job code (no requirements.txt: see above)
SERVING_CODE = tuple(Path(p).name for p in code_inputs.job_code("inference.py", requirements=False))


# what a truncated or corrupt gzip'd tar raises, somewhere in the reading of it
UNREADABLE = (EOFError, tarfile.TarError, zlib.error, OSError)


class ArtifactError(RuntimeError):
    """A model artifact that cannot be served; the message names the file and the command that remakes it."""


def package_for_serving(model_tar, source_dir, out_tar, remake="rerun the train rule"):
    """remake: the command that makes model_tar again, for the message when it cannot be read."""
    source_dir = Path(source_dir)
    for name in SERVING_CODE:
        if not (source_dir / name).is_file():
            raise FileNotFoundError(f"{source_dir}/{name} is missing: the endpoint needs it")
    Path(out_tar).parent.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(model_tar) as model, tarfile.open(out_tar, "w:gz") as out:
            for member in model.getmembers():
                if member.name.startswith("code/"):
                    continue  # a stale code/ would shadow the current one
                out.addfile(member, model.extractfile(member) if member.isfile() else None)
            for name in SERVING_CODE:
                out.add(source_dir / name, arcname=f"code/{name}")
    except UNREADABLE as error:
        Path(out_tar).unlink(missing_ok=True)
        raise ArtifactError(
            f"{model_tar} cannot be read ({type(error).__name__}: {error or 'truncated'}): make it again with "
            f"`{remake}`"
        ) from None


def check_servable(model_tar, remake="rerun the package_model rule", timeout=300):
    """Unpack the served artifact aside and load its model with its own code/inference.py (model_fn), in a process
    of its own, before anything serving now is touched. ArtifactError, naming the file and the command that
    remakes it, when it cannot be read or its model does not load."""
    with tempfile.TemporaryDirectory(prefix="dogbreed-artifact-") as unpacked:
        try:
            with tarfile.open(model_tar) as archive:
                archive.extractall(unpacked, filter="data")
        except UNREADABLE as error:
            raise ArtifactError(
                f"{model_tar} cannot be read ({type(error).__name__}: {error or 'truncated'}), so nothing was "
                f"deployed and the endpoint serving now is untouched: make it again with `{remake}`"
            ) from None
        if not (Path(unpacked) / "code" / "inference.py").is_file():
            raise ArtifactError(
                f"{model_tar} holds no code/inference.py, so nothing was deployed and the endpoint serving now is "
                f"untouched: make it again with `{remake}`"
            )
        load = "import sys, inference; inference.model_fn(sys.argv[1])"
        loaded = subprocess.run(
            [sys.executable, "-c", load, unpacked],
            cwd=Path(unpacked) / "code",
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if loaded.returncode != 0:
            last = (loaded.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise ArtifactError(
                f"the model in {model_tar} does not load with its code/inference.py ({last[:300]}), so nothing was "
                f"deployed and the endpoint serving now is untouched: make it again with `{remake}`"
            )
