"""The served artifact: the training job's model.tar.gz plus code/ with what serving needs from the
source_dir (inference.py and the module it imports), as SageMaker's PyTorchModel repacks it. Editing
inference.py therefore redeploys without retraining.

Only those files: a requirements.txt in code/ would make SageMaker's inference toolkit pip-install it
when the endpoint starts (network needed, slower start, and a pip failure fails the endpoint), and the
training requirements (the GPU metrics library) have no business on an endpoint."""

import tarfile
from pathlib import Path

from dogbreed.runtime import code_inputs
from dogbreed.serving.model_archive import writing_model_tar
from dogbreed.serving.servable import UNREADABLE, ArtifactError, reading_error

# inference.py and what it imports from the job code (no requirements.txt: see above)
SERVING_CODE = tuple(Path(p).name for p in code_inputs.job_code("inference.py", requirements=False))


def package_for_serving(model_tar, source_dir, out_tar, remake="rerun the train rule"):
    """remake: the command that makes model_tar (the training artifact) again, for the message when it cannot be
    read."""
    source_dir = Path(source_dir)
    for name in SERVING_CODE:
        if not (source_dir / name).is_file():
            raise FileNotFoundError(f"{source_dir}/{name} is missing: the endpoint needs it")
    Path(out_tar).parent.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(model_tar) as model, writing_model_tar(out_tar) as out:
            for member in model.getmembers():
                if member.name.startswith("code/"):
                    continue  # a stale code/ would shadow the current one
                out.addfile(member, model.extractfile(member) if member.isfile() else None)
            for name in SERVING_CODE:
                out.add(source_dir / name, arcname=f"code/{name}")
    except UNREADABLE as error:  # (reading errors only: a write that fails says so itself)
        Path(out_tar).unlink(missing_ok=True)
        raise ArtifactError(
            f"{model_tar} cannot be read ({reading_error(error)}): make it again with `{remake}`"
        ) from None
