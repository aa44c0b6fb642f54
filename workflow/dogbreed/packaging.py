"""The served artifact: the training job's model.tar.gz plus code/ (the whole source_dir, with
inference.py), as SageMaker's PyTorchModel repacks it. Editing inference.py therefore redeploys
without retraining."""
import tarfile
from pathlib import Path


def package_for_serving(model_tar, source_dir, out_tar):
    source_dir = Path(source_dir)
    if not (source_dir / "inference.py").is_file():
        raise FileNotFoundError(f"{source_dir}/inference.py is missing: the endpoint needs it")
    Path(out_tar).parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(model_tar) as model, tarfile.open(out_tar, "w:gz") as out:
        for member in model.getmembers():
            if member.name.startswith("code/"):
                continue  # a stale code/ would shadow the current one
            out.addfile(member, model.extractfile(member) if member.isfile() else None)
        for path in sorted(source_dir.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                out.add(path, arcname=f"code/{path.relative_to(source_dir).as_posix()}")
