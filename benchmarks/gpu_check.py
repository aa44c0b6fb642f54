"""The GPU check (issue 28): the speeds that matter on a GPU machine, in one table, in under 8 minutes.

    bash benchmarks/gpu_check.sh                       # a clean checkout: make's venv, then the full check
    .venv/bin/python benchmarks/gpu_check.py           # the full check (one H100/H200: under 8 minutes)
    .venv/bin/python benchmarks/gpu_check.py --quick   # every item at toy sizes, seconds each, on any CPU

Rows (ROWS), each bounded by its images or seconds, on a dogImages-shaped generated set
(benchmarks/dogimages_like.py: real JPEG sizes, so the loader decodes what the real run's does):
- fine-tuning images/s at 224 px: fp32 (NCHW) vs AMP vs AMP + channels_last (train.py's --amp and
  --channels_last), one epoch of the whole training set on a GPU (a per-class subset without one); the note holds
  the steps' compute alone and their data wait;
- the input pipeline: the training loader alone (JPEG decode + augmentation, train.py's workers) over the same
  epoch against the fastest setting's compute alone: loader-bound or compute-bound;
- extraction images/s: scripts/feature_cache.py (the frozen backbone, one view) as a job;
- end to end: the demo (`make demo`'s run, config/demo.yaml) and the laptop rehearsal (config/laptop.yaml with
  `augment: true`, 3 views) from empty results, in a scratch copy of the workflow: seconds, the stages that
  hold most of them and the test accuracy;
- DDP: the fastest fine-tuning setting in one process vs one process per GPU (torchrun), where there is more
  than one GPU;
- the local endpoint (batching on, its defaults) serving the fine-tuned 224 px model: images/s at 1 and 16
  clients, each sending its next JPEG when its answer comes.
Without a GPU the full check says so and skips the rows that only a GPU makes meaningful, with the reason, or
that would take far longer than 8 minutes on CPU cores. --quick runs every row on whatever is there (AMP as
bf16 on a CPU, DDP as 2 CPU processes, the demo up to its upload, the rehearsal through its extraction and
tuning): tests/test_gpu_check.py runs it in `make test-long`, so the check cannot fail for a silly reason when a
GPU comes. Its table goes into BENCHMARKS.md with the device it names; nothing here is asserted.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "benchmarks"))
import classifier
import dogimages_like
import image_folders
from bench_demo import job_times
from bench_speed import drive_endpoint
from dogbreed.backends.local import LocalBackend, pack_model_dir

PYTHON = sys.executable
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
ROWS = (
    ("fine-tuning", "fp32, NCHW"),
    ("fine-tuning", "AMP"),
    ("fine-tuning", "AMP + channels_last"),
    ("input pipeline", "the loader alone"),
    ("input pipeline", "the fastest setting's compute alone"),
    ("extraction", "feature_cache.py, one view"),
    ("end to end", "the demo"),
    ("end to end", "the laptop rehearsal, augment: true"),
    ("DDP", "1 process"),
    ("DDP", "one process per GPU"),
    ("endpoint", "1 client"),
    ("endpoint", "16 clients"),
)
FINETUNE = {
    "fp32, NCHW": ("--amp", "false", "--channels_last", "false"),
    "AMP": ("--amp", "true", "--channels_last", "false"),
    "AMP + channels_last": ("--amp", "true", "--channels_last", "true"),
}


@dataclass
class Sizes:
    image_size: int  # fine-tuning, extraction, the served model
    scale: float  # of dogImages' 8,351 images, for the rehearsal and the subsets
    per_class: int | None  # training images a class in the fine-tuning and extraction jobs (133 classes); None: all
    batch_size: int
    endpoint_seconds: float  # each client count's run
    loader_batches: int | None  # the loader alone, batches after its first; None: a whole epoch
    cores: str  # Snakemake's
    demo_targets: tuple
    rehearsal_targets: tuple
    workflow_overlay: dict  # over both workflows' configs
    job_timeout: int


def sizes(quick: bool, cuda: bool) -> Sizes:
    if quick:  # seconds an item on two CPU cores: the code paths, not the speeds
        tiny = {
            "model": {"image_size": 32},
            "hyperparameters": {"epochs": 1},
            "tuning": {"max_jobs": 1, "max_parallel_jobs": 1, "trial_hyperparameters": {"epochs": 1}},
        }
        return Sizes(32, 0.02, 1, 32, 1.0, 2, "2", ("upload",), ("tune",), tiny, 300)
    whole = ("deploy", "report")
    # on a GPU every training image (6,680): a shorter epoch rides on the batches the loader prefetched while its first
    # step warmed up, and looks compute-bound when it is not (BENCHMARKS.md: the GPU check)
    return Sizes(
        224, 1.0, None if cuda else 1, 64 if cuda else 16, 10.0, None if cuda else 20, "all", whole, whole, {}, 600
    )


def machine() -> str:
    gpus = torch.cuda.device_count()
    device = f"{gpus} GPU(s): {torch.cuda.get_device_name(0)}" if gpus else "no GPU"
    return f"{device}, {os.cpu_count()} CPUs ({platform.machine()}); torch {torch.__version__}"


class Table:
    """The rows so far, each said as it comes (stderr) and printed together at the end (stdout)."""

    def __init__(self):
        self.rows, self.started = {}, time.perf_counter()

    def add(self, key, value, unit, note=""):
        self.rows[key] = (f"{value:.1f}" if isinstance(value, float) else str(value), unit, note)
        at = time.perf_counter() - self.started
        print(f"  [{at:4.0f} s] {key[0]} / {key[1]}: {self.rows[key][0]} {unit} {note}", file=sys.stderr, flush=True)

    def skip(self, key, reason):
        self.add(key, "skipped", "", reason)

    def failed(self, keys, error):
        for key in keys:
            if key not in self.rows:
                self.add(key, "failed", "", str(error).strip().splitlines()[-1][:200] if str(error).strip() else "")

    def markdown(self) -> str:
        lines = ["| item | setting | result | unit | notes |", "|---|---|---|---|---|"]
        lines += [f"| {item} | {setting} | {' | '.join(self.rows[(item, setting)])} |" for item, setting in ROWS]
        return "\n".join(lines)


def run(command, timeout, cwd=None, env=None) -> str:
    """A job's stdout; a failure raises with its last lines."""
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, command[:3]))} failed: {(done.stdout + done.stderr)[-2000:]}")
    return done.stdout + done.stderr


def subset(split: Path, out: Path, per_class: int | None) -> Path:
    """The first per_class images (None: all) of every class of split, linked under out (train.py reads class
    folders)."""
    for folder in sorted(p for p in split.iterdir() if p.is_dir()):
        (out / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_class]:
            (out / folder.name / image.name).symlink_to(image)
    return out


def train_job(data: Path, out: Path, flags, s: Sizes, processes=1, env=None) -> dict:
    """scripts/train.py for one epoch: images/s over its training steps (step 0 of each rank warms up), the
    steps' compute alone and their data wait, from the job's own step timings (rank 0's)."""
    launcher = [PYTHON]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "--max_restarts=0"]
    run(
        [*launcher, REPO / "scripts/train.py", "--train", data / "train", "--valid", data / "valid"]
        + ["--model_dir", out / "model", "--output_data_dir", out / "output", "--checkpoint_dir", out / "ckpt"]
        + ["--weights", "none", "--profile", "true", "--epochs", 1, "--image_size", s.image_size]
        + ["--batch_size", s.batch_size, *flags],
        s.job_timeout,
        env=env,
    )
    steps = [json.loads(line) for line in (out / "output/profiler/steps.jsonl").read_text().splitlines()]
    steps = [step for step in steps if step["phase"] == "train" and step["step"] > 0]
    images = s.batch_size * len(steps)  # drop_last: every batch is full (the whole job's, over its ranks)
    span = steps[-1]["end"] - steps[0]["start"]
    compute, wait = sum(step["compute_s"] for step in steps), sum(step["data_wait_s"] for step in steps)
    return {
        "images/s": images / span,
        "compute images/s": images / processes / compute,  # one rank's share in its own compute time
        "wait": wait / span,
        "steps": len(steps),
        "model": out / "model",
    }


def finetune_rows(table, data, scratch, s, cuda, quick) -> dict:
    results = {}
    for name, flags in FINETUNE.items():
        key = ("fine-tuning", name)
        if name != "fp32, NCHW" and not (cuda or quick):
            table.skip(key, "no GPU: AMP is on for CUDA only (bf16 autocast on a CPU without bf16 units is slower)")
            continue
        try:
            result = results[name] = train_job(data, scratch / f"finetune-{len(results)}", flags, s)
        except Exception as error:
            table.failed([key], error)
            continue
        table.add(
            key,
            result["images/s"],
            "images/s",
            f"{s.image_size} px, batch {s.batch_size}, {result['steps']} steps; compute alone "
            f"{result['compute images/s']:.0f} images/s; waiting for data {100 * result['wait']:.0f} % of the time",
        )
    return results


def loader_alone(data: Path, s: Sizes, device) -> tuple:
    """(images/s, workers) of train.py's training loader alone: decoding and augmenting, no model."""
    spec = classifier.preprocessing_spec(s.image_size)  # resnet18's recipe
    dataset = image_folders.ImageFolderByNumber(data / "train", classifier.train_transform(spec, on_device=True))
    options = image_folders.loader_options(-1, device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=s.batch_size, shuffle=True, drop_last=True, **options)
    batches, images, started = iter(loader), 0, None
    for index in range(len(loader) if s.loader_batches is None else min(s.loader_batches + 1, len(loader))):
        batch, _ = next(batches)
        if index == 0:  # the workers' start is not the loader's speed
            started = time.perf_counter()
        else:
            images += len(batch)
    return images / (time.perf_counter() - started), options["num_workers"]


def pipeline_rows(table, data, s, device, finetuned):
    keys = [("input pipeline", "the loader alone"), ("input pipeline", "the fastest setting's compute alone")]
    try:
        rate, workers = loader_alone(data, s, device)
        table.add(keys[0], rate, "images/s", f"decode + augment, {workers} workers, {s.batch_size}-image batches")
        if not finetuned:
            raise RuntimeError("no fine-tuning row came out")
        name, best = max(finetuned.items(), key=lambda item: item[1]["compute images/s"])
        bound = "loader-bound" if rate < best["compute images/s"] else "compute-bound"
        table.add(keys[1], best["compute images/s"], "images/s", f"{name}: {bound} (the loader gives {rate:.0f})")
    except Exception as error:
        table.failed(keys, error)


def extraction_row(table, data, scratch, s):
    key = ("extraction", "feature_cache.py, one view")
    try:
        out = run(
            [PYTHON, REPO / "scripts/feature_cache.py", "--train", data / "train", "--valid", data / "valid"]
            + ["--model_dir", scratch / "features", "--weights", "none", "--image_size", s.image_size]
            + ["--augment", "false"],
            s.job_timeout,
        )
        views = re.findall(r"view 1/1: (\d+) images in ([0-9.]+) s", out)
        images, seconds = sum(int(n) for n, _ in views), sum(float(t) for _, t in views)
        table.add(key, images / max(seconds, 0.05), "images/s", f"{images} images (train + valid), {s.image_size} px")
    except Exception as error:
        table.failed([key], error)


def workflow_copy(target: Path) -> Path:
    target.mkdir(parents=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, target / name)
    for name in ("workflow", "scripts", "config", "profiles", "envs"):  # tests/conftest.py: copy_workflow's
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def workflow_row(table, key, work: Path, configfile: str, overlay: dict, targets: tuple, s: Sizes):
    """A workflow run from empty results, in its own scratch folder: wall seconds, its longest stages, accuracy."""
    try:
        scratch = work.parent
        overlay = {
            **overlay,
            "results_dir": str(scratch / "results"),
            "store": {"uri": (scratch / "store").as_uri()},
            "tracking": {"uri": f"sqlite:///{scratch / 'mlflow.db'}"},
        }
        (work / "config/gpu-check.yaml").write_text(yaml.safe_dump(overlay))
        configs = ["--configfile", configfile, "config/gpu-check.yaml"]
        started = time.perf_counter()
        log = run(
            [SNAKEMAKE, *targets, *configs, "--cores", s.cores, "--workflow-profile", "profiles/verbose"],
            timeout=900,
            cwd=work,
        )
        wall = time.perf_counter() - started
        if "deploy" in targets:
            run([SNAKEMAKE, "teardown", *configs, "--cores", "1"], timeout=120, cwd=work)
        times = {rule: end - start for rule, (start, end) in job_times(log).items() if end is not None}
        longest = sorted(times.items(), key=lambda item: -item[1])[:3]
        note = ", ".join(f"{rule} {seconds:.0f} s" for rule, seconds in longest)
        metrics = scratch / "results/evaluation/metrics.json"
        if metrics.is_file():
            note += f"; test accuracy {json.loads(metrics.read_text())['accuracy']:.3f}"
        table.add(key, wall, "s", f"{' '.join(targets)}: {note}")
    except Exception as error:
        table.failed([key], error)


def end_to_end_rows(table, scratch, dogimages, s, cuda, quick):
    if not SNAKEMAKE.exists():  # a Python with torch but not the workflow's environment (gpu_check.sh makes it)
        for key in ROWS[6:8]:
            table.skip(key, f"no Snakemake beside {PYTHON}: run benchmarks/gpu_check.sh, which installs the venv")
        return
    tiny = s.workflow_overlay
    workflow_row(table, ROWS[6], workflow_copy(scratch / "demo/work"), "config/demo.yaml", tiny, s.demo_targets, s)
    key = ROWS[7]
    if not (cuda or quick):
        table.skip(key, "no GPU: 3 augmented views of 6,680 images, 9-17 minutes of extraction on 2 CPU cores")
        return
    rehearsal = {
        **tiny,
        "data_source": str(dogimages),
        "model": {**tiny.get("model", {}), "weights": "none"},  # nothing to download from: the same network's time
        "hyperparameters": {**tiny.get("hyperparameters", {}), "augment": True},
    }
    workflow_row(
        table, key, workflow_copy(scratch / "rehearsal/work"), "config/laptop.yaml", rehearsal, s.rehearsal_targets, s
    )


def ddp_rows(table, data, scratch, s, finetuned, quick):
    keys = [("DDP", "1 process"), ("DDP", "one process per GPU")]
    gpus = torch.cuda.device_count()
    processes = gpus if gpus > 1 else (2 if quick else 0)
    if not finetuned:
        table.failed(keys, "no fine-tuning row came out")
        return
    name, one = max(finetuned.items(), key=lambda item: item[1]["images/s"])
    table.add(keys[0], one["images/s"], "images/s", f"{name} (its fine-tuning row)")
    if not processes:
        table.skip(keys[1], f"{gpus or 'no'} GPU{'s' if gpus != 1 else ''}: DDP needs more than one")
        return
    try:
        # quick with one GPU or none: two gloo processes on the CPU (train.py refuses more processes than GPUs)
        env = None if gpus > 1 else {"CUDA_VISIBLE_DEVICES": ""}
        many = train_job(data, scratch / "ddp", FINETUNE[name], s, processes, env)
        where = f"{processes} GPUs" if gpus > 1 else f"{processes} CPU processes (gloo)"
        table.add(keys[1], many["images/s"], "images/s", f"{name}, {where}: {many['images/s'] / one['images/s']:.2f}×")
    except Exception as error:
        table.failed(keys[1:], error)


def endpoint_rows(table, scratch, image: bytes, finetuned, s):
    """The fine-tuned model behind the local endpoint (batching on: the backend's defaults)."""
    keys = [("endpoint", "1 client"), ("endpoint", "16 clients")]
    if not finetuned:
        table.failed(keys, "no fine-tuned model to serve")
        return
    model_dir = next(iter(finetuned.values()))["model"]
    shutil.copytree(REPO / "scripts", model_dir / "code", ignore=shutil.ignore_patterns("__pycache__"))
    pack_model_dir(model_dir, scratch / "model.tar.gz")
    backend, state = LocalBackend({}), scratch / "endpoint"
    try:
        url = backend.deploy(scratch / "model.tar.gz", "gpu-check", state)["url"] + "/invocations"
        for key, clients in zip(keys, (1, 16), strict=True):
            latencies, seconds = drive_endpoint(url, image, clients, seconds=s.endpoint_seconds)
            note = (
                f"{len(latencies)} requests, p50 {1000 * statistics.median(latencies):.0f} ms, {s.image_size} px model"
            )
            table.add(key, len(latencies) / seconds, "images/s", note)
    except Exception as error:
        table.failed(keys, error)
    finally:
        backend.teardown(state)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every row at toy sizes (seconds each), on any device")
    args = parser.parse_args(argv)
    # the endpoint's server imports the job contract from scripts/, as the Snakefile's jobs do
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO / "scripts"), os.environ.get("PYTHONPATH")] if p)
    cuda = torch.cuda.is_available()
    s = sizes(args.quick, cuda)
    device = torch.device("cuda" if cuda else "cpu")
    started, table = time.perf_counter(), Table()
    print(f"gpu check ({'quick' if args.quick else 'full'}) on {machine()}", file=sys.stderr, flush=True)
    if not (cuda or args.quick):
        print("no GPU here: the rows only a GPU makes meaningful are skipped, each with its reason", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        scratch = Path(tmp)
        dogimages = dogimages_like.generate(scratch / "dogimages-like", workers=os.cpu_count(), scale=s.scale)
        data = scratch / "subset"
        for split, per_class in (("train", s.per_class), ("valid", s.per_class and max(1, s.per_class // 8))):
            subset(dogimages / split, data / split, per_class)
        finetuned = finetune_rows(table, data, scratch, s, cuda, args.quick)
        pipeline_rows(table, data, s, device, finetuned)
        extraction_row(table, data, scratch, s)
        ddp_rows(table, data, scratch, s, finetuned, args.quick)
        image = next((dogimages / "test").glob("*/*.jpg")).read_bytes()
        endpoint_rows(table, scratch, image, finetuned, s)
        end_to_end_rows(table, scratch, dogimages, s, cuda, args.quick)
    print(f"\ngpu check ({'quick' if args.quick else 'full'}) on {machine()}: {time.perf_counter() - started:.0f} s\n")
    print(table.markdown())
    failed = [key for key, row in table.rows.items() if row[0] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
