"""Train (or run one tuning trial of) the dog-breed classifier under the SageMaker training contract.

Hyperparameters arrive as flags (SageMaker passes `--name value` for each one); every default comes
from the SM_* environment, so the same file runs in a SageMaker container, under the project's local
backend (which lays out a job folder like /opt/ml and sets the same variables) and by hand.

Channels are folders of class folders named `NNN.Breed_Name`; class index = NNN - 1.
Prints one metric line per epoch, which tuners and the workflow read with a regex:
    epoch=3 train_loss=0.912 train_accuracy=0.702 valid_loss=1.044 valid_accuracy=0.731
"""
import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import classifier
import instrumentation

CLASS_FOLDER = re.compile(r"^(\d+)\.(.+)$")


def str2bool(value) -> bool:
    # SageMaker passes every hyperparameter as a string: "True", "false", "1" ...
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    # allow_abbrev=False: a misspelt hyperparameter (`--epoch 1`) is an error, not a prefix of --epochs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    # hyperparameters (underscore names, as SageMaker passes them; dashes work too)
    parser.add_argument("--lr", "--learning_rate", type=float, default=0.003)
    parser.add_argument("--batch_size", "--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight_decay", "--weight-decay", type=float, default=0.0)
    parser.add_argument("--arch", default="resnet18", choices=sorted(classifier.ARCHITECTURES))
    parser.add_argument("--weights", default="imagenet", help="imagenet | none | path to a state dict")
    parser.add_argument("--freeze_backbone", "--freeze-backbone", type=str2bool, default=False)
    parser.add_argument("--image_size", "--image-size", type=int, default=224)
    parser.add_argument("--resize", type=int, default=0, help="shorter side before the centre crop (default: image_size × 8/7)")
    parser.add_argument("--augment", type=str2bool, default=True)
    parser.add_argument("--num_workers", "--num-workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep_best", "--keep-best", type=str2bool, default=True,
                        help="save the weights of the epoch with the lowest validation loss, not the last epoch's")
    # what the job records about itself (off for tuning trials, on for the final training)
    parser.add_argument("--debug", type=str2bool, default=False, help="smdebug tensors into <output>/debug")
    parser.add_argument("--profile", type=str2bool, default=False, help="system metrics and step timings into <output>/profiler")
    parser.add_argument("--save_interval", "--save-interval", type=int, default=10, help="debug tensors every N steps")
    parser.add_argument("--profiler_interval_ms", "--profiler-interval-ms", type=int, default=500)
    # the SageMaker training contract
    parser.add_argument("--train", default=env.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"))
    parser.add_argument("--valid", default=env.get("SM_CHANNEL_VALID", "/opt/ml/input/data/valid"))
    parser.add_argument("--model_dir", "--model-dir", default=env.get("SM_MODEL_DIR", "/opt/ml/model"))
    parser.add_argument("--output_data_dir", "--output-data-dir",
                        default=env.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
    parser.add_argument("--checkpoint_dir", "--checkpoint-dir",
                        default=env.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def training_job_name(env=os.environ) -> str:
    """This job's name: SageMaker and its local mode set TRAINING_JOB_NAME (kept across a spot
    restart), the project's local backend passes it in SM_TRAINING_ENV; "" when run by hand."""
    if env.get("TRAINING_JOB_NAME"):
        return env["TRAINING_JOB_NAME"]
    try:
        return str(json.loads(env.get("SM_TRAINING_ENV") or "{}").get("job_name") or "")
    except ValueError:
        return ""


def list_class_folders(*channels):
    """{class index: breed name} over the given channel folders; indices come from the NNN prefix."""
    classes = {}
    for channel in channels:
        for folder in sorted(Path(channel).iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            match = CLASS_FOLDER.match(folder.name)
            if not match:
                sys.exit(f"error: class folder {folder} is not named NNN.Breed_Name (the prepare stage writes that layout)")
            index, name = int(match.group(1)) - 1, match.group(2)
            if classes.get(index, name) != name:
                sys.exit(f"error: class number {index + 1} names two breeds: {classes[index]!r} and {name!r}")
            classes[index] = name
    if not classes:
        sys.exit(f"error: no class folders in {channels}")
    return classes


class ImageFolderByNumber(Dataset):
    """(image, class index) pairs from `NNN.Breed/*` folders; index = NNN - 1, whatever folders exist."""

    def __init__(self, root, transform):
        self.samples = []
        for folder in sorted(Path(root).iterdir()):
            match = CLASS_FOLDER.match(folder.name)
            if not match or not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    self.samples.append((path, int(match.group(1)) - 1))
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), label


def make_optimizer(args, params):
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)


def run_epoch(model, loader, device, loss_fn, epoch, optimizer=None, hook=None, timer=None):
    """One pass over `loader`; trains when an optimizer is given. Returns (mean loss, accuracy).

    With a debug hook, it sees the loss, the labels and the predictions; with a timer, each step is
    split into the wait for its batch and the compute (synchronised on a GPU, which runs async).
    """
    training = optimizer is not None
    model.train(training)
    if hook is not None:
        import smdebug.pytorch as smd
        hook.set_mode(smd.modes.TRAIN if training else smd.modes.EVAL)
    total_loss, correct, seen = 0.0, 0, 0
    batches = iter(loader)
    step = 0
    with torch.set_grad_enabled(training):
        while True:
            started = time.time()
            try:
                images, labels = next(batches)
            except StopIteration:
                break
            data_ready = time.time()
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            logits = model(images)
            loss = loss_fn(logits, labels)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            predictions = logits.argmax(1)
            if hook is not None:
                hook.save_tensor("labels", labels, "labels")
                hook.save_tensor("predictions", predictions, "predictions")
            total_loss += loss.item() * len(labels)  # .item() waits for the GPU, so timings are real
            correct += (predictions == labels).sum().item()
            seen += len(labels)
            if timer is not None:
                timer.record("train" if training else "valid", epoch, step, started, data_ready, time.time())
            step += 1
    return total_loss / max(seen, 1), correct / max(seen, 1)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = classifier.pick_device()
    resize = args.resize or round(args.image_size * 8 / 7)  # 224 → 256, as torchvision's recipes
    spec = classifier.preprocessing_spec(args.image_size, resize)

    found = list_class_folders(args.train, args.valid)
    classes = [found.get(i, f"class_{i + 1:03d}") for i in range(max(found) + 1)]
    train_set = ImageFolderByNumber(args.train, classifier.train_transform(spec) if args.augment
                                    else classifier.eval_transform(spec))
    valid_set = ImageFolderByNumber(args.valid, classifier.eval_transform(spec))
    if not len(train_set) or not len(valid_set):
        sys.exit(f"error: empty channel: train has {len(train_set)} images, valid {len(valid_set)}")
    loader_args = dict(batch_size=args.batch_size, num_workers=args.num_workers,
                       pin_memory=device.type == "cuda", persistent_workers=args.num_workers > 0)
    train_loader = DataLoader(train_set, shuffle=True, drop_last=len(train_set) > args.batch_size, **loader_args)
    valid_loader = DataLoader(valid_set, shuffle=False, **loader_args)

    try:
        model = classifier.build_model(args.arch, len(classes), args.weights)
    except classifier.WeightsUnavailable as error:
        sys.exit(f"error: {error}")
    if args.freeze_backbone:  # train the new head only: fast, and enough when the backbone is pretrained
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.startswith("fc.")
    model.to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    output_dir = Path(args.output_data_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    optimizer = make_optimizer(args, [p for p in model.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.epochs, 1))

    # Resume after an interruption (a spot instance reclaimed, a killed run): SageMaker syncs this
    # folder to S3 and back; the local backend keeps it until the job succeeds. Only this job's own
    # checkpoint counts: the trials of a SageMaker tuning job share one checkpoint prefix, so each
    # keeps its checkpoint under its own name and never resumes from another job's weights.
    job_name = training_job_name()
    checkpoint_path = Path(args.checkpoint_dir) / job_name / "checkpoint.pth"
    record_copy = checkpoint_path.parent / "record"  # the job's record so far, as of the checkpoint
    start_epoch = 1
    best = {"epoch": 0, "valid_loss": float("inf"), "weights": None}  # the epoch kept with --keep_best
    checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True) if checkpoint_path.is_file() else None
    if checkpoint is not None and checkpoint.get("job_name", "") != job_name:
        print(f"ignoring {checkpoint_path}: it was written by job {checkpoint.get('job_name')!r}, not {job_name!r}", flush=True)
        checkpoint = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch = checkpoint["epoch"] + 1
        best = checkpoint["best"]
        # the metrics, step timings and debug tensors of the epochs before: the record covers the whole run
        debug_step = (checkpoint.get("debug_hook") or {}).get("step")
        instrumentation.restore_record(record_copy, output_dir, checkpoint["epoch"], debug_step)
        print(f"resumed from {checkpoint_path} after epoch {checkpoint['epoch']}", flush=True)

    hook = timer = None
    if args.debug:
        hook = instrumentation.create_debug_hook(output_dir / "debug", args.save_interval)
        hook.register_module(model)
        hook.register_loss(loss_fn)
        if checkpoint is not None and checkpoint.get("debug_hook"):
            instrumentation.resume_debug_hook(hook, checkpoint["debug_hook"])  # steps go on numbering
    if args.profile:
        timer = instrumentation.StepTimer(output_dir / "profiler/steps.jsonl")
        instrumentation.write_job_info(output_dir / "profiler/job.json", device=device.type,
                                       gpu_count=torch.cuda.device_count(), num_workers=args.num_workers,
                                       batch_size=args.batch_size, epochs=args.epochs, arch=args.arch,
                                       train_images=len(train_set), started=time.time(),
                                       resumed_after_epoch=checkpoint["epoch"] if checkpoint is not None else None)
    monitor = (instrumentation.SystemMonitor(output_dir / "profiler/system.jsonl", args.profiler_interval_ms / 1000)
               if args.profile else contextlib.nullcontext())

    print(f"training {args.arch} on {device}: {len(train_set)} train / {len(valid_set)} valid images, "
          f"{len(classes)} classes, hyperparameters lr={args.lr} batch_size={args.batch_size} "
          f"epochs={args.epochs} optimizer={args.optimizer}", flush=True)
    with monitor:
        for epoch in range(start_epoch, args.epochs + 1):
            started = time.perf_counter()
            train_loss, train_accuracy = run_epoch(model, train_loader, device, loss_fn, epoch, optimizer, hook, timer)
            valid_loss, valid_accuracy = run_epoch(model, valid_loader, device, loss_fn, epoch, None, hook, timer)
            scheduler.step()
            epoch_metrics = {"epoch": epoch, "train_loss": round(train_loss, 4), "train_accuracy": round(train_accuracy, 4),
                             "valid_loss": round(valid_loss, 4), "valid_accuracy": round(valid_accuracy, 4),
                             "epoch_seconds": round(time.perf_counter() - started, 1)}
            if valid_loss < best["valid_loss"]:
                best = {"epoch": epoch, "valid_loss": valid_loss,
                        "weights": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            # The epoch's metrics go to the output data (for backends whose logs are far away), the
            # record so far beside the checkpoint, then the checkpoint, then the epoch's line: an epoch
            # whose line was printed is never lost to an interruption. The checkpoint is written aside
            # and renamed, so a kill mid-write leaves the previous one whole.
            with open(output_dir / "metrics.jsonl", "a") as metrics_file:
                metrics_file.write(json.dumps(epoch_metrics) + "\n")
            if hook is not None:
                instrumentation.flush_debug_hook(hook)
            if timer is not None:
                timer.flush()
            instrumentation.keep_record(output_dir, record_copy)
            checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "epoch": epoch, "best": best, "job_name": job_name,
                        "debug_hook": instrumentation.debug_hook_state(hook) if hook is not None else None},
                       checkpoint_path.with_suffix(".tmp"))
            os.replace(checkpoint_path.with_suffix(".tmp"), checkpoint_path)
            # The one metric line per epoch: tuners (local and SageMaker) parse it with a regex.
            print(" ".join(f"{k}={v}" for k, v in epoch_metrics.items()), flush=True)
    if hook is not None:
        hook.close()
    if timer is not None:
        timer.close()

    if args.keep_best and best["weights"] is not None:
        model.load_state_dict(best["weights"])
        print(f"keeping epoch {best['epoch']} (lowest valid_loss {best['valid_loss']:.4f})", flush=True)
    classifier.save_model(args.model_dir, model.cpu(), args.arch, classes, spec)
    Path(args.output_data_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_data_dir) / "hyperparameters.json").write_text(json.dumps(vars(args), indent=2))
    print(f"saved model to {args.model_dir}", flush=True)
    # Done: the checkpoint has served its purpose. Removing it keeps later trials of a tuning job,
    # which share the checkpoint prefix, from copying it into their containers.
    checkpoint_path.unlink(missing_ok=True)
    shutil.rmtree(record_copy, ignore_errors=True)


if __name__ == "__main__":
    main()
