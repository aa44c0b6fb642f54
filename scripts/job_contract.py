"""The contract between the workflow and its jobs, as data: one home for what both sides must agree on.

The job code (train.py, feature_cache.py, inference.py) imports this file from its source_dir; the workflow
(workflow/dogbreed) imports the same file. No torch here: the workflow reads it without the job's environment.

- the flags: one table (FLAGS), one parser builder (build_parser), one boolean parser (to_bool);
- the data check: what the workflow uploaded (channel_digest) and the flag that carries it to the job;
- the lines a job prints and the workflow reads: the epoch line (format_epoch_line / parse_epoch_line), the
  lines meant for a person (NOTE), the setup-failure marker (SETUP_FAILED), the resume marker (RESUMED);
- the files a job writes that the workflow reads: metrics.jsonl, profiler/job.json's input kind, the feature
  cache's file names;
- the endpoint's: the content types inference.py takes and answers, and its error answer's first line.
"""

import argparse
import contextlib
import hashlib
import json
import os
import re
from pathlib import Path

# --- flags -------------------------------------------------------------------------------------------


def to_bool(value) -> bool:
    """SageMaker passes every hyperparameter as a string ("True", "false", "1"); the workflow's
    --config key=value too. Anything else than these words is an error, not False."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not true or false")


def amp_flag(value):
    """--amp: "auto" (on with CUDA), or a boolean as to_bool reads it."""
    return "auto" if str(value).strip().lower() == "auto" else to_bool(value)


# name: (type, default, help). Underscore names, as SageMaker passes them; the dashed spelling works too.
FLAGS = {
    # hyperparameters
    "lr": (float, 0.003, "learning rate"),
    "batch_size": (int, 32, "the whole job's batch (each DDP process takes its share)"),
    "epochs": (int, 5, ""),
    "optimizer": (str, "sgd", "sgd | adam | adamw"),
    "momentum": (float, 0.9, ""),
    "weight_decay": (float, 0.0, ""),
    "arch": (str, "resnet18", "a torchvision classification model: resnet18, mobilenet_v3_large, vit_b_16 …"),
    "weights": (str, "imagenet", "imagenet | none | path to a state dict"),
    "freeze_backbone": (to_bool, False, "train the new head only"),
    "image_size": (int, 224, ""),
    "resize": (
        int,
        0,
        "shorter side before the centre crop (0: as the arch's ImageNet recipe, image_size × 8/7 for a ResNet18)",
    ),
    "augment": (to_bool, True, "random crops and flips of the training images"),
    "feature_views": (int, 3, "augmented views per training image (one, the eval transform, without --augment)"),
    "num_workers": (int, -1, "DataLoader workers; -1: the CPUs per GPU (SM_NUM_CPUS / GPUs), at most 8"),
    "amp": (
        amp_flag,
        "auto",
        (
            "mixed precision: auto (on with CUDA: bf16 where the GPU has it, else fp16 with a "
            "gradient scaler) | true | false"
        ),
    ),
    "channels_last": (to_bool, True, "NHWC activations: faster convolutions on tensor cores and on the CPU"),
    "seed": (int, 0, ""),
    "keep_best": (to_bool, True, "save the weights of the epoch with the lowest validation loss, not the last epoch's"),
    # what the job records about itself (off for tuning trials, on for the final training)
    "debug": (to_bool, False, "debug tensors into <output>/debug"),
    "profile": (to_bool, False, "system metrics and step timings into <output>/profiler"),
    "save_interval": (int, 10, "debug tensors every N steps"),
    "profiler_interval_ms": (int, 500, ""),
    # what the workflow uploaded: the job refuses channels that hold anything else
    "expect_data": (
        str,
        "",
        "channel=<files>:<digest>,... as the workflow uploaded them (channel_digest); empty: no check",
    ),
}
CHOICES = {"optimizer": ("sgd", "adam", "adamw")}  # arch: any torchvision classifier (classifier.check_arch)

# Which flags each entry point takes. The cached features depend on the feature job's flags but its loader's
# (FEATURE_LOADER_FLAGS) and the data check: the workflow derives what a tuned setting may not change from this.
TRAIN_FLAGS = tuple(name for name in FLAGS if name != "feature_views")
FEATURE_FLAGS = (
    "arch",
    "weights",
    "image_size",
    "resize",
    "augment",
    "feature_views",
    "seed",
    "batch_size",
    "num_workers",
    "channels_last",
    "expect_data",
)
FEATURE_LOADER_FLAGS = ("batch_size", "num_workers", "channels_last")

# the SageMaker training contract: flag → (environment variable, default path)
CONTRACT_FOLDERS = {
    "train": ("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"),
    "valid": ("SM_CHANNEL_VALID", "/opt/ml/input/data/valid"),
    "model_dir": ("SM_MODEL_DIR", "/opt/ml/model"),
    "output_data_dir": ("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"),
    "checkpoint_dir": ("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints"),
}


def build_parser(flags, folders, description="", defaults=None, env=os.environ) -> argparse.ArgumentParser:
    """An entry point's parser: the named FLAGS (defaults overridden by `defaults`) and the named contract
    folders, whose defaults come from SageMaker's SM_* variables. allow_abbrev=False: a misspelt
    hyperparameter (`--epoch 1`) is an error, not a prefix of --epochs."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    for name in flags:
        kind, default, help_text = FLAGS[name]
        spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        if name == "lr":
            spellings.append("--learning_rate")
        parser.add_argument(
            *spellings,
            type=kind,
            default=(defaults or {}).get(name, default),
            help=help_text or None,
            choices=CHOICES.get(name),
        )
    for name in folders:
        variable, default = CONTRACT_FOLDERS[name]
        parser.add_argument(
            f"--{name}", *([f"--{name.replace('_', '-')}"] if "_" in name else []), default=env.get(variable, default)
        )
    return parser


# --- the data a job trains on ------------------------------------------------------------------------


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def is_data_file(name: str) -> bool:
    """A channel's data file by its relative name: not hidden (no part starts with "."; the loaders skip those)
    and not an upload in flight (".partial")."""
    return not any(part.startswith(".") for part in name.split("/")) and not name.endswith(PARTIAL)


def channel_files(folder) -> list:
    """The data files of a channel folder, relative and sorted."""
    folder = Path(folder)
    return sorted(
        name
        for name in (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        if is_data_file(name)
    )


def channel_digest(folder) -> str:
    """ "<files>:<hash>": how many files a channel holds and a hash of their names and contents. The workflow
    computes it over what it uploads, the job over what it was given: equal means the same data."""
    folder = Path(folder)
    return digest_of({name: sha256_file(folder / name) for name in channel_files(folder)})


def digest_of(hashes: dict) -> str:
    """channel_digest from {relative name: sha256 of its content} (the store's record of an S3 channel)."""
    digest = hashlib.sha256()
    for name in sorted(hashes):
        digest.update(f"{name}\0{hashes[name]}\n".encode())
    return f"{len(hashes)}:{digest.hexdigest()[:16]}"


def expect_data(digests: dict) -> str:
    """{channel: digest} → the --expect_data value."""
    return ",".join(f"{channel}={digests[channel]}" for channel in sorted(digests))


def data_mismatch(expected: str, folders: dict):
    """None when every channel named in --expect_data holds what the workflow uploaded; else one line."""
    for item in filter(None, expected.split(",")):
        channel, _, wanted = item.partition("=")
        found = channel_digest(folders[channel])
        if found != wanted:
            have, want = found.split(":")[0], wanted.split(":")[0]
            what = f"{have} files, not the {want}" if have != want else f"{have} files whose contents differ from those"
            return (
                f"the {channel} channel ({folders[channel]}) holds {what} the workflow uploaded (digest {found}, "
                f"expected {wanted}): the store was changed after the upload; run what wrote it again "
                f"(snakemake --forcerun upload, or --forcerun extract_features for cached features)"
            )
    return None


# --- the lines a job prints ----------------------------------------------------------------------------

# One metric line per epoch, which tuners (local and SageMaker's) read with a regex, in this order:
#     epoch=3 train_loss=0.912 train_accuracy=0.702 valid_loss=1.044 valid_accuracy=0.731 epoch_seconds=4.2
EPOCH_KEYS = ("epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "epoch_seconds")
EPOCH_LINE = re.compile(r"^epoch=(\d+)\s")
KEY_VALUE = re.compile(r"(\w+)=([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)")
# The lines a job prints for a person (what it trains on, a resume, the epoch it keeps): the workflow shows
# these and the epoch lines on the terminal, the rest only in the job's log.
NOTE = "[job] "
RESUMED = "resumed from "  # a NOTE: "[job] resumed from <checkpoint> after epoch N"
# The line a job prints when it fails before its first step (the data, the weights, the model, the
# environment): such a failure does not depend on the hyperparameters, so a tuner that reads it stops
# the whole study instead of failing every trial the same way.
SETUP_FAILED = "job setup failed: "


def format_epoch_line(values: dict) -> str:
    return " ".join(f"{key}={values[key]}" for key in EPOCH_KEYS if key in values)


def parse_epoch_line(line: str):
    """`epoch=3 train_loss=0.91 ...` → {"epoch": 3, "train_loss": 0.91, ...}; None for other lines."""
    if not EPOCH_LINE.match(line):
        return None
    values = {key: float(value) for key, value in KEY_VALUE.findall(line)}
    values["epoch"] = int(values["epoch"])
    return values


def metric_regex(name: str) -> str:
    """The regex that reads a metric from the epoch line (SageMaker's metric_definitions)."""
    return f"{name}=([0-9.eE+-]+)"


# --- the files a job writes --------------------------------------------------------------------------

METRICS_FILE = "metrics.jsonl"  # under output data: one epoch's EPOCH_KEYS a line, the whole run's
# under output data: the epoch whose weights the model holds, {"epoch": N, "why": "..."} (the report marks it)
KEPT_EPOCH_FILE = "kept_epoch.json"
# under output data's debug/ (instrumentation.DebugRecord writes them, the debugger rules read them): one step a
# line (its step, mode, loss, labels, predictions), and one saved step a line (its tensors' reductions)
BATCHES_FILE = "batches.jsonl"
TENSORS_FILE = "tensors.jsonl"
# Each collection's reductions in TENSORS_FILE: those a rule or report reads (dogbreed/checks), as each is a pass
# over the tensor at every saved step. max, min and l2 everywhere: ExplodingTensor's (a NaN or an infinity anywhere
# shows in them); abs_max its evidence; the weights' variance PoorWeightInitialization's; the ReLU inputs' range
# (max - min) its trigger; the gradients' abs_mean VanishingGradient's.
TENSOR_REDUCTIONS = {
    "weights": ("max", "min", "variance", "abs_max", "l2"),
    "biases": ("max", "min", "abs_max", "l2"),
    "gradients": ("max", "min", "abs_mean", "abs_max", "l2"),
    "relu_input": ("max", "min", "l2"),
}
JOB_INFO_FILE = "profiler/job.json"
# profiler/job.json's "inputs": what the job trained on
INPUTS_IMAGES = "images"
INPUTS_FEATURES = "cached backbone features"
# the feature cache, per channel folder (feature_cache.py writes them, train.py reads them)
FEATURES_FILE = "features.pt"
FEATURES_INFO_FILE = "features.json"
BACKBONE_FILE = "backbone.pth"
FEATURE_CHANNEL_FILES = {
    "train": {FEATURES_FILE, FEATURES_INFO_FILE, BACKBONE_FILE},
    "valid": {FEATURES_FILE, FEATURES_INFO_FILE},
}


# --- the endpoint (inference.py; evaluate and the local server speak it too) ------------------------

JSON = "application/json"
NPY = "application/x-npy"
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")


def error_body(reason: str) -> str:
    """The first line of every error answer, on every backend: {"error": "<one line>"}. (SageMaker's inference
    toolkit appends a traceback on the lines after it; the local server sends this line alone.)"""
    return json.dumps({"error": " ".join(reason.split())})


def read_metrics_file(path) -> list:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# --- files written whole ---------------------------------------------------------------------------
PARTIAL = ".partial"  # a file being written: no reader takes it for data (is_data_file), no sync deletes another's


@contextlib.contextmanager
def written_whole(path):
    """Write a file aside and rename it into place, so no reader (a job, a sync, a resume) ever sees half of it and a
    write that fails (a full disk, an interruption) leaves nothing behind. Yields the path to write to:
    <name>.<pid>.partial beside it, this process's own (two writers of one file at once never share one)."""
    path = Path(path)
    partial = path.with_name(f"{path.name}.{os.getpid()}{PARTIAL}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
