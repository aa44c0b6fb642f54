"""Train (or run one tuning trial of) the dog-breed classifier under the SageMaker training contract.

Hyperparameters arrive as flags (SageMaker passes `--name value` for each one); every default comes
from the SM_* environment, so the same file runs in a SageMaker container, under the project's local
backend (which lays out a job folder like /opt/ml and sets the same variables) and by hand.

Channels are folders of class folders named `NNN.Breed_Name`; class index = NNN - 1.
Prints one metric line per epoch, which tuners and the workflow read with a regex:
    epoch=3 train_loss=0.912 train_accuracy=0.702 valid_loss=1.044 valid_accuracy=0.731

Started as several processes (torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK; SageMaker's
torch_distributed launcher is torchrun too), it trains with DistributedDataParallel: NCCL on GPUs (one per
process), gloo on CPUs. batch_size stays the batch of one step of the whole job (each process takes its share),
so tuned hyperparameters mean the same on one process or many. Rank 0 prints, writes the checkpoint, the
metrics, the model, the debug tensors and the profiler files; every rank keeps its own step timings, and each
machine's first process its system metrics.
"""

import argparse
import contextlib
import datetime
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import classifier
import feature_cache
import instrumentation
import job_contract as contract
import torch
from image_folders import ImageFolderByNumber, list_class_folders, loader_options
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset


class SetupError(RuntimeError):
    """A mistake in the job's inputs, said in one line (no traceback)."""


@contextlib.contextmanager
def setting_up():
    """Everything before the first step runs inside: its failures end the job with the contract's SETUP_FAILED
    line (the tuner stops the study on it: no hyperparameters would help)."""
    try:
        yield
    except SetupError as error:
        print(f"{contract.SETUP_FAILED}{error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except torch.cuda.OutOfMemoryError:  # a batch size, or a GPU shared by parallel trials: not the setup's
        raise
    except SystemExit as error:  # sys.exit("error: …") in the modules the job shares with feature_cache.py
        if not isinstance(error.code, str):
            raise
        print(f"{contract.SETUP_FAILED}{error.code.removeprefix('error: ')}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as error:
        traceback.print_exc()
        print(f"{contract.SETUP_FAILED}{type(error).__name__}: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


class Processes:
    """This process's place in the job: rank 0 of 1 alone; under torchrun one of WORLD_SIZE, in a process group.

    A rank that dies (kill -9, out of memory) is seen by torchrun's agent, which ends the others at once;
    the group's timeout (DOGBREED_DDP_TIMEOUT_S, 300 s) bounds a rank left waiting on a collective anyway."""

    def __init__(self, env=os.environ):
        self.world = int(env.get("WORLD_SIZE", "1"))
        self.rank, self.local_rank = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
        self.lead = self.rank == 0
        if self.world > 1:
            backend = "nccl" if classifier.pick_device().type == "cuda" else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(self.local_rank)
            timeout = datetime.timedelta(seconds=float(env.get("DOGBREED_DDP_TIMEOUT_S", "300")))
            torch.distributed.init_process_group(backend, timeout=timeout)

    def device(self, device):
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.world > 1 else device

    def say(self, text):
        """A line for a person (the contract's NOTE: the workflow shows it on the terminal), on rank 0 only: a
        job's lines once, however many processes it has."""
        if self.lead:
            print(contract.NOTE + text, flush=True)

    def sum(self, values, device):
        """values summed over the ranks (a list of numbers); as they are alone."""
        if self.world == 1:
            return values
        totals = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(totals)
        return totals.tolist()

    def share_buffers(self, net):
        """Rank 0's buffers (BatchNorm's running statistics) on every rank: each rank keeps its own while training
        (DDP with broadcast_buffers off: no sync inside a forward pass, so a step's forward time is the rank's
        own), and validation and the saved model are rank 0's."""
        if self.world > 1:
            for buffer in net.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def barrier(self):
        """Every rank here before any goes on (the same call on every rank)."""
        if self.world > 1:
            torch.distributed.barrier()

    def close(self):
        if self.world > 1:
            torch.distributed.destroy_process_group()


def build_parser() -> argparse.ArgumentParser:
    # the flags and their SM_* defaults are the job contract's (job_contract.py), shared with the workflow
    return contract.build_parser(contract.TRAIN_FLAGS, contract.CONTRACT_FOLDERS, __doc__)


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


def make_optimizer(args, params):
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)


class Compute:
    """Where and how a step runs: the device, the precision (AMP), the memory format, and the inputs
    made ready there (uint8 images normalised on the device; cached features as they are)."""

    def __init__(self, device, amp: str, channels_last: bool, spec: dict, images: bool):
        self.device, self.spec, self.images = device, spec, images
        self.channels_last = channels_last and images
        on = device.type == "cuda" if amp == "auto" else amp
        # bf16 needs no loss scaling; fp16 (GPUs before Ampere) does. On the CPU AMP means bf16, for tests.
        self.dtype = None
        if on:
            self.dtype = (
                torch.float16 if device.type == "cuda" and not torch.cuda.is_bf16_supported() else torch.bfloat16
            )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    def describe(self) -> str:
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + gradient scaler"}[
            self.dtype
        ]
        return f"{precision}{', channels_last' if self.channels_last else ''}"

    def inputs(self, batch):
        batch = batch.to(self.device, non_blocking=True)
        return classifier.normalise(batch, self.spec, self.channels_last) if self.images else batch

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, loss, optimizer):
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def set_mode(net, training: bool, freeze_backbone: bool):
    """Train or eval mode; a frozen backbone stays in eval mode (BatchNorm statistics frozen too), so
    training it on images or its head on cached features is the same model."""
    net = getattr(net, "module", net)  # DistributedDataParallel's model
    net.train(training)
    if freeze_backbone:  # (on cached features net is the head alone: head_name is "", the head itself)
        net.eval()
        net.get_submodule(classifier.head_name(net)).train(training)


def run_epoch(
    net,
    loader,
    compute,
    loss_fn,
    epoch,
    optimizer=None,
    record=None,
    timer=None,
    freeze_backbone=False,
    processes=None,
):
    """One pass over `loader`; trains when an optimizer is given. Returns (mean loss, accuracy).

    net is what the job trains: the whole model, or only its head on cached backbone features. With a debug record
    (instrumentation.DebugRecord), each step's loss, labels and predictions go into it, and every save_interval
    steps the network's tensors; with a timer, each step is split
    into the wait for its batch and the compute (synchronised on a GPU, which runs async).
    """
    training = optimizer is not None
    set_mode(net, training, freeze_backbone)
    total_loss, correct, seen = 0.0, 0, 0
    batches = iter(loader)
    step = 0
    with torch.set_grad_enabled(training):
        while True:
            started = time.time()
            try:
                inputs, labels = next(batches)
            except StopIteration:
                break
            data_ready = time.time()
            inputs, labels = compute.inputs(inputs), labels.to(compute.device, non_blocking=True)
            if record is not None:
                record.begin_step(training)
            with compute.autocast():
                logits = net(inputs)
                loss = loss_fn(logits.float(), labels)
            if timer is not None and compute.device.type == "cuda":
                torch.cuda.synchronize()  # the forward pass's own time (the GPU runs async)
            forward_done = time.time()  # before backward: DDP's gradient all-reduce waits there for the slowest rank
            if training:
                compute.step(loss, optimizer)
            predictions = logits.argmax(1)
            step_loss = loss.item()  # waits for the GPU, so timings are real
            if record is not None:
                record.end_step(step_loss, labels, predictions)
            total_loss += step_loss * len(labels)
            correct += (predictions == labels).sum().item()
            seen += len(labels)
            if timer is not None:
                timer.record(
                    "train" if training else "valid", epoch, step, started, data_ready, time.time(), forward_done
                )
            step += 1
    if processes is not None:  # the whole job's epoch: every rank's share of the data
        total_loss, correct, seen = processes.sum([total_loss, correct, seen], compute.device)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def load_channels(args, spec, check_data=True):
    """(train set, valid set, classes, cached): images from class folders, or, when the channels hold
    the feature cache, the frozen backbone's features of those images. Either must be what the workflow
    uploaded (--expect_data), or the job refuses it in one line (check_data: one process per machine reads
    the files for it; the others' channels are the same folders)."""
    if check_data and (
        mismatch := contract.data_mismatch(args.expect_data, {"train": args.train, "valid": args.valid})
    ):
        raise SetupError(mismatch)
    if feature_cache.is_feature_channel(args.train):
        if not args.freeze_backbone:
            raise SetupError(
                f"the train channel {args.train} holds cached backbone features, which only train a frozen "
                f"backbone's head: set freeze_backbone true, or model.feature_cache false to train on the images"
            )
        train_set, valid_set = feature_cache.CachedFeatures(args.train), feature_cache.CachedFeatures(args.valid)
        for cache in (train_set, valid_set):
            feature_cache.check_spec(cache, args.arch, spec)
        found = {**valid_set.classes, **train_set.classes}
        return train_set, valid_set, found, True
    found = list_class_folders(args.train, args.valid)
    augment = (
        classifier.train_transform(spec, on_device=True)
        if args.augment
        else classifier.eval_transform(spec, on_device=True)
    )
    return (
        ImageFolderByNumber(args.train, augment),
        ImageFolderByNumber(args.valid, classifier.eval_transform(spec, on_device=True)),
        found,
        False,
    )


def load_data(args, spec, processes, device) -> SimpleNamespace:
    """The channels as loaders: each rank its share of every batch, in an order of its own generator."""
    train_set, valid_set, found, cached = load_channels(args, spec, check_data=processes.local_rank == 0)
    classes = [found.get(i, f"class_{i + 1:03d}") for i in range(max(found) + 1)]
    if not len(train_set) or not len(valid_set):
        raise SetupError(f"empty channel: train has {len(train_set)} images, valid {len(valid_set)}")
    # Cached features are a tensor in memory: no workers to feed them.
    options = {"num_workers": 0} if cached else loader_options(args.num_workers, device)
    # The batch order has a generator of its own, seeded once: the same order with images or cached
    # features (their other random draws differ), and after a resume (advanced past the epochs done).
    batch_order = torch.Generator().manual_seed(args.seed)
    if processes.world > 1:  # each rank its share of every batch: a shuffle per epoch (set_epoch), valid split exactly
        batch_size = max(1, args.batch_size // processes.world)
        sampler = DistributedSampler(
            train_set, processes.world, processes.rank, shuffle=True, seed=args.seed, drop_last=True
        )
        valid_share = Subset(valid_set, range(processes.rank, len(valid_set), processes.world))
    else:
        batch_size, sampler, valid_share = args.batch_size, RandomSampler(train_set, generator=batch_order), valid_set
    return SimpleNamespace(
        train_set=train_set,
        valid_set=valid_set,
        classes=classes,
        cached=cached,
        workers=options["num_workers"],
        sampler=sampler,
        batch_order=batch_order,
        train_loader=DataLoader(
            train_set, batch_size=batch_size, sampler=sampler, drop_last=len(train_set) > args.batch_size, **options
        ),
        valid_loader=DataLoader(valid_share, batch_size=batch_size, shuffle=False, **options),
    )


def build_model(args, data, spec, device, processes) -> SimpleNamespace:
    """The classifier, the part of it the steps run (the head alone on cached features), and how they run."""
    try:  # with cached features, the backbone is the one they were computed with
        model = classifier.build_model(args.arch, len(data.classes), "none" if data.cached else args.weights)
    except classifier.WeightsUnavailable as error:
        raise SetupError(error) from None
    if data.cached:
        feature_cache.load_backbone(model, args.train)
    head = classifier.head_name(model)
    if args.freeze_backbone:  # train the new head only: fast, and enough when the backbone is pretrained
        for name, parameter in model.named_parameters():
            parameter.requires_grad = classifier.is_head_parameter(name, head)
    compute = Compute(device, args.amp, args.channels_last, spec, images=not data.cached)
    model.to(device)
    if compute.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model.get_submodule(head) if data.cached else model  # what the steps run and the debug record watches
    # what the training steps run: across processes, DDP averages the gradients (frozen parameters aside)
    train_net = net
    if processes.world > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        train_net = torch.nn.parallel.DistributedDataParallel(net, device_ids=device_ids, broadcast_buffers=False)
    optimizer = make_optimizer(args, [p for p in model.parameters() if p.requires_grad])
    return SimpleNamespace(
        model=model,
        net=net,
        train_net=train_net,
        compute=compute,
        loss_fn=torch.nn.CrossEntropyLoss(),
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.epochs, 1)),
    )


class Checkpoint:
    """Resume after an interruption (a spot instance reclaimed, a killed run): SageMaker syncs the checkpoint folder
    to S3 and back; the local backend keeps it until the job succeeds. Only this job's own checkpoint counts: the
    trials of a SageMaker tuning job share one checkpoint prefix, so each keeps its checkpoint under its own name and
    never resumes from another job's weights. Beside it, the job's record so far (metrics, step timings, debug
    tensors), so the record of a resumed job covers the whole run."""

    def __init__(self, checkpoint_dir, job_name):
        self.job_name = job_name
        self.path = Path(checkpoint_dir) / job_name / "checkpoint.pth"
        self.record_copy = self.path.parent / "record"

    def load(self, device, say):
        """The saved state, or None when there is none of this job's."""
        state = torch.load(self.path, map_location=device, weights_only=True) if self.path.is_file() else None
        if state is not None and state.get("job_name", "") != self.job_name:
            say(f"ignoring {self.path}: it was written by job {state.get('job_name')!r}, not {self.job_name!r}")
            return None
        return state

    def resume(self, state, model, data, processes, output_dir) -> tuple:
        """Put the state back into the model, optimizer, scheduler and scaler, the record into output_dir and the
        batch order where it was; (the first epoch to run, the best epoch so far)."""
        model.model.load_state_dict(state["model"])
        model.optimizer.load_state_dict(state["optimizer"])
        model.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            model.compute.scaler.load_state_dict(state["scaler"])
        debug_step = (state.get("debug_steps") or {}).get("step")
        if processes.lead:
            instrumentation.restore_record(self.record_copy, output_dir, state["epoch"], debug_step)
        if not isinstance(data.sampler, DistributedSampler):  # which orders by set_epoch, drawing nothing
            for _ in range(state["epoch"]):  # the epochs' draws, as many as RandomSampler makes (two permutations)
                for _ in data.sampler:
                    pass
        processes.say(f"{contract.RESUMED}{self.path} after epoch {state['epoch']}")
        return state["epoch"] + 1, state["best"]

    def save(self, model, epoch, best, record, output_dir):
        """The record so far, then the state: written aside and renamed, so a kill mid-write leaves the previous
        one whole, and a failed write (a full disk) leaves nothing."""
        instrumentation.keep_record(output_dir, self.record_copy)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # what a process killed mid-write left (kill -9, a reclaimed spot instance; checkpoint.tmp: older versions)
        for stale in [*self.path.parent.glob(f"{self.path.name}.*{contract.PARTIAL}"), self.path.with_suffix(".tmp")]:
            stale.unlink(missing_ok=True)
        state = {
            "model": model.model.state_dict(),
            "optimizer": model.optimizer.state_dict(),
            "scheduler": model.scheduler.state_dict(),
            "scaler": model.compute.scaler.state_dict(),
            "epoch": epoch,
            "best": best,
            "job_name": self.job_name,
            "debug_steps": record.state() if record is not None else None,
        }
        with contract.written_whole(self.path) as partial:  # a full disk leaves no half checkpoint behind
            torch.save(state, partial)

    def remove(self):
        """Done: the checkpoint has served its purpose. Removing it keeps later trials of a tuning job, which share
        the checkpoint prefix, from copying it into their containers."""
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.record_copy, ignore_errors=True)


class Instruments:
    """What the job records beside its training: the debug record (rank 0), step timings (every rank, so a
    straggler shows), system metrics (each machine's first process) and the epochs into its MLflow run."""

    def __init__(self, args, processes, output_dir, model, resumed_state, job_info):
        self.record = self.timer = None
        lead = processes.lead
        if args.profile:
            steps_file = "steps.jsonl" if lead else f"steps.rank{processes.rank}.jsonl"
            self.timer = instrumentation.StepTimer(output_dir / "profiler" / steps_file)
        if args.debug and lead:
            self.record = instrumentation.DebugRecord(output_dir / "debug", model.net, args.save_interval)
            if resumed_state is not None and resumed_state.get("debug_steps"):
                self.record.resume(resumed_state["debug_steps"])  # steps go on numbering
        if args.profile and lead:
            instrumentation.write_job_info(output_dir / "profiler/job.json", **job_info)
        # into the job's MLflow run, where the workflow made one
        self.epoch_logger = instrumentation.EpochLogger() if lead else instrumentation.EpochLogger({})
        # system metrics once per machine (its first process): rank 0's system.jsonl, another host's its own file
        system_file = "system.jsonl" if lead else f"system.rank{processes.rank}.jsonl"
        self.monitor = (
            instrumentation.SystemMonitor(output_dir / "profiler" / system_file, args.profiler_interval_ms / 1000)
            if args.profile and processes.local_rank == 0
            else contextlib.nullcontext()
        )

    def close(self):
        if self.timer is not None:
            self.timer.close()


def job_info(args, device, data, compute, processes, resumed_state) -> dict:
    """The profiler's record of the job (profiler/job.json)."""
    return {
        "device": device.type,
        "gpu_count": torch.cuda.device_count(),
        "num_workers": data.workers,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "arch": args.arch,
        "train_images": len(data.train_set),
        "started": time.time(),
        "precision": compute.describe(),
        "inputs": contract.INPUTS_FEATURES if data.cached else contract.INPUTS_IMAGES,
        "class_names": data.classes,
        "resumed_after_epoch": resumed_state["epoch"] if resumed_state is not None else None,
        "processes": processes.world,
    }


def job_line(args, device, data, compute, processes) -> str:
    """The job in one line for a person: what trains on what, with which hyperparameters, recording what."""
    return (
        f"training {args.arch} on {device}"
        + (f" × {processes.world} processes" if processes.world > 1 else "")
        + f": {len(data.train_set)} train / {len(data.valid_set)} valid images, "
        f"{len(data.classes)} classes, hyperparameters lr={args.lr} batch_size={args.batch_size} "
        f"epochs={args.epochs} optimizer={args.optimizer}; {compute.describe()}"
        + (
            f"; the head on cached backbone features ({len(data.train_set.features)} view(s))"
            if data.cached
            else f"; {data.workers} loader workers"
        )
        # what the job records
        + (f"; debug tensors every {args.save_interval} steps" if args.debug else "")
        + (f"; system metrics every {args.profiler_interval_ms} ms and step timings" if args.profile else "")
    )


def train_epochs(args, data, model, instruments, checkpoint, processes, output_dir, start_epoch, best) -> dict:
    """The training loop, from start_epoch to args.epochs; the best epoch (lowest valid_loss) when it ends."""
    compute, record, timer = model.compute, instruments.record, instruments.timer
    for epoch in range(start_epoch, args.epochs + 1):
        started = time.perf_counter()
        if data.cached:
            data.train_set.set_epoch(epoch, args.seed)
        if isinstance(data.sampler, DistributedSampler):
            data.sampler.set_epoch(epoch)
        train_loss, train_accuracy = run_epoch(
            model.train_net,
            data.train_loader,
            compute,
            model.loss_fn,
            epoch,
            model.optimizer,
            record,
            timer,
            args.freeze_backbone,
            processes,
        )
        processes.share_buffers(model.net)  # validate rank 0's model, the one that is saved, on every rank's share
        valid_loss, valid_accuracy = run_epoch(
            model.net,
            data.valid_loader,
            compute,
            model.loss_fn,
            epoch,
            None,
            record,
            timer,
            args.freeze_backbone,
            processes,
        )
        model.scheduler.step()
        epoch_metrics = {
            "epoch": epoch,
            "train_loss": round(train_loss, 4),
            "train_accuracy": round(train_accuracy, 4),
            "valid_loss": round(valid_loss, 4),
            "valid_accuracy": round(valid_accuracy, 4),
            "epoch_seconds": round(time.perf_counter() - started, 1),
        }
        if valid_loss < best["valid_loss"]:
            weights = {k: v.detach().cpu().clone() for k, v in model.model.state_dict().items()}
            best = {"epoch": epoch, "valid_loss": valid_loss, "weights": weights}
        # The epoch's metrics go to the output data (for backends whose logs are far away), the record so far beside
        # the checkpoint, then the checkpoint, then the epoch's line: an epoch whose line was printed is never lost
        # to an interruption. (Rank 0's alone: the ranks' models are the same; the others keep their step timings.)
        if timer is not None:
            timer.flush()
        processes.barrier()  # every rank's timings of the epoch are on disk before rank 0 keeps the record
        if not processes.lead:
            continue
        with open(output_dir / contract.METRICS_FILE, "a") as metrics_file:
            metrics_file.write(json.dumps(epoch_metrics) + "\n")
        if record is not None:
            record.flush()
        checkpoint.save(model, epoch, best, record, output_dir)
        instruments.epoch_logger.log(epoch_metrics)
        # The one metric line per epoch: tuners (local and SageMaker) parse it with a regex.
        print(contract.format_epoch_line(epoch_metrics), flush=True)
    return best


def save_artifact(args, model, best, classes, spec):
    """The model SageMaker packs into model.tar.gz (the best epoch's weights with --keep_best), and the
    hyperparameters it was trained with."""
    kept = {"epoch": args.epochs, "why": "the last epoch"}
    if args.keep_best and best["weights"] is not None:
        model.load_state_dict(best["weights"])
        kept = {"epoch": best["epoch"], "why": f"lowest valid_loss {best['valid_loss']:.4f}"}
        print(f"{contract.NOTE}keeping epoch {kept['epoch']} ({kept['why']})", flush=True)
    classifier.save_model(args.model_dir, model.cpu(), args.arch, classes, spec)
    Path(args.output_data_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_data_dir) / contract.KEPT_EPOCH_FILE).write_text(json.dumps(kept))
    (Path(args.output_data_dir) / "hyperparameters.json").write_text(json.dumps(vars(args), indent=2))
    print(f"saved model to {args.model_dir}", flush=True)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    processes = Processes()
    device = processes.device(classifier.pick_device())

    with setting_up():  # a failure before the first step is the same for every hyperparameter
        try:
            classifier.check_input_size(args.arch, args.image_size)
        except ValueError as error:
            raise SetupError(error) from None
        spec = classifier.preprocessing_spec(args.image_size, args.resize, args.arch)  # the arch's own recipe
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one input shape throughout: cuDNN picks its fastest kernels
        data = load_data(args, spec, processes, device)
        model = build_model(args, data, spec, device, processes)
        output_dir = Path(args.output_data_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = Checkpoint(args.checkpoint_dir, training_job_name())
        state = checkpoint.load(device, processes.say)
        start_epoch, best = 1, {"epoch": 0, "valid_loss": float("inf"), "weights": None}  # the epoch --keep_best keeps
        if state is not None:
            start_epoch, best = checkpoint.resume(state, model, data, processes, output_dir)
        processes.barrier()  # rank 0 has put the record back before any rank opens its files in it
        info = job_info(args, device, data, model.compute, processes, state)
        instruments = Instruments(args, processes, output_dir, model, state, info)
        processes.say(job_line(args, device, data, model.compute, processes))
    with instruments.monitor:
        best = train_epochs(args, data, model, instruments, checkpoint, processes, output_dir, start_epoch, best)
    instruments.close()
    processes.close()
    if not processes.lead:  # the artifact is rank 0's to write
        return
    save_artifact(args, model.model, best, data.classes, spec)
    checkpoint.remove()


if __name__ == "__main__":
    main()
