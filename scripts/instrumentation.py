"""What the training job records about itself, so debugger and profiler rules can run on any backend.

SageMaker Debugger is closed to new customers and its profiler is ending, so the job writes its own
evidence under SM_OUTPUT_DATA_DIR (which SageMaker returns in output.tar.gz):
  debug/batches.jsonl       one line per step: its step number, mode, loss, labels and predictions (every
                            step, so the loss rules compare real windows and ClassImbalance sees the whole class mix)
  debug/tensors.jsonl       one line per saved step (every save_interval-th step of training and of validation):
                            reductions of the weights, biases, gradients and ReLU inputs (reductions only: full
                            tensors would be hundreds of MB)
  profiler/system.jsonl     one line per sampling interval: CPU per core, memory, disk and network I/O,
                            GPU utilisation and memory (NVML) when there is a GPU
  profiler/steps.jsonl      one line per step: phase, epoch, start, data-wait and compute seconds
  profiler/job.json         start time, init time (process start → first step), device, loader workers …
"""

import json
import os
import shutil
import threading
import time
from pathlib import Path

import job_contract as contract
import psutil
import torch


# --- the debug record --------------------------------------------------------------------------
class DebugRecord:
    """debug/: what the Debugger rules read of the training, as SageMaker Debugger's hook would save it, written
    by the job itself at a cost a long run can afford.

    Steps are numbered as smdebug numbers them: one global count over every forward pass (training and
    validation), and a count per mode (TRAIN, EVAL). Every step gives one line of batches.jsonl (its loss, labels
    and predictions). Every `save_interval`-th step of a mode is a saved step: one line of tensors.jsonl with the
    reductions of the network's weights and biases (before its forward pass), the inputs of its modules named
    `relu` (as each runs: the tensors smdebug's relu_input collection held) and, in training, its gradients
    (after the optimizer step, unscaled by AMP's GradScaler), each tensor named as smdebug names it. A step that
    is not saved costs a counter and a line: the ReLU hooks exist during saved steps only, and each collection's
    reductions are those a rule or report reads (job_contract.TENSOR_REDUCTIONS), computed where the tensors are
    and read back once a step. Both files are kept in memory and appended at each epoch's end (flush), beside the
    checkpoint, which holds the step counts (state / resume).
    """

    def __init__(self, debug_dir, net, save_interval: int):
        debug_dir = Path(debug_dir)
        debug_dir.mkdir(parents=True, exist_ok=True)
        self.batches_path, self.tensors_path = debug_dir / contract.BATCHES_FILE, debug_dir / contract.TENSORS_FILE
        self.net, self.save_interval = net, save_interval
        self.prefix = net._get_name() + "_"  # smdebug's parameter names: the watched module's class, then the path
        # smdebug's relu_input collection: the inputs of modules named relu (ResNet's); PoorWeightInitialization
        # matches these names (.*relu_input)
        self.relus = [(name, m) for name, m in net.named_modules() if name.split(".")[-1] == "relu"]
        self.step, self.mode_steps, self.mode = -1, {"TRAIN": -1, "EVAL": -1}, "TRAIN"
        self.batch_lines, self.tensor_lines = [], []
        self.saving, self.hooks = None, []

    def begin_step(self, training: bool):
        """Before the step's forward pass: count it; on a saved step reduce the weights and hook the ReLU inputs."""
        self._remove_hooks()  # a step that raised before its end_step left them (and its saving)
        self.saving = None
        self.mode = "TRAIN" if training else "EVAL"
        self.step += 1
        self.mode_steps[self.mode] += 1
        if self.mode_steps[self.mode] % self.save_interval:
            return
        self.saving = {}
        for name, parameter in self.net.named_parameters():
            collection = "biases" if "bias" in name else "weights" if "weight" in name else None
            if collection is not None:  # as smdebug: a parameter named neither (a ViT's class token) is not saved
                self._keep(self.prefix + name, collection, parameter.detach())
        for name, module in self.relus:
            self.hooks.append(module.register_forward_pre_hook(self._relu_input_hook(f"{name}_input_0")))

    def _keep(self, tensor_name, collection, tensor):
        # the first value a step sees: a block's one ReLU runs twice a pass (smdebug saves its first input too);
        # reduced at once, since an in-place ReLU overwrites its input
        if tensor_name not in self.saving:
            self.saving[tensor_name] = (collection, reductions(collection, tensor))

    def _relu_input_hook(self, tensor_name):
        def keep(module, inputs):
            self._keep(tensor_name, "relu_input", inputs[0].detach())

        return keep

    def end_step(self, loss: float, labels, predictions):
        """After the step: its line, and a saved step's tensors into theirs."""
        labels, predictions = torch.stack((labels, predictions)).tolist()  # one read back from the device, not two
        self.batch_lines.append(
            json.dumps(
                {"step": self.step, "mode": self.mode, "loss": loss, "labels": labels, "predictions": predictions}
            )
        )
        if self.saving is None:
            return
        self._remove_hooks()
        if self.mode == "TRAIN":
            # this step's gradients (zero_grad sets them to None first; a frozen parameter has none), after the
            # optimizer step: GradScaler has unscaled them there, so they are the gradients the step applied
            for name, parameter in self.net.named_parameters():
                if parameter.grad is not None:
                    self._keep("gradient/" + self.prefix + name, "gradients", parameter.grad.detach())
        tensors = {}
        if self.saving:
            values = iter(torch.stack([v for _, kept in self.saving.values() for v in kept.values()]).tolist())
            for name, (collection, kept) in self.saving.items():
                tensors[name] = {"collection": collection, **{reduction: next(values) for reduction in kept}}
        self.tensor_lines.append(json.dumps({"step": self.step, "mode": self.mode, "tensors": tensors}))
        self.saving = None

    def _remove_hooks(self):
        for hook in self.hooks:
            hook.remove()
        self.hooks = []

    def flush(self):
        for path, lines in ((self.batches_path, self.batch_lines), (self.tensors_path, self.tensor_lines)):
            with open(path, "a") as out:
                out.writelines(line + "\n" for line in lines)
            lines.clear()

    def state(self) -> dict:
        """The step counts, kept in the checkpoint: a resumed job numbers its steps on from them."""
        return {"step": self.step, "mode_steps": dict(self.mode_steps)}

    def resume(self, state: dict):
        self.step, self.mode_steps = state["step"], {**self.mode_steps, **state["mode_steps"]}


def reductions(collection: str, tensor) -> dict:
    """The collection's reductions of a tensor (job_contract.TENSOR_REDUCTIONS), as 0-d tensors where it is (no
    wait for a GPU)."""
    tensor = tensor.float()
    absolute = tensor.abs() if any(name.startswith("abs_") for name in contract.TENSOR_REDUCTIONS[collection]) else None
    compute = {
        "max": lambda: tensor.max(),
        "min": lambda: tensor.min(),
        "variance": lambda: tensor.double().var(correction=0),  # population variance, as np.var (in float64)
        "abs_mean": lambda: absolute.mean(),
        "abs_max": lambda: absolute.max(),
        "l2": lambda: torch.linalg.vector_norm(tensor),
    }
    return {name: compute[name]() for name in contract.TENSOR_REDUCTIONS[collection]}


# --- system metrics ------------------------------------------------------------------------------
def _gpu_handles():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no NVIDIA driver, no GPU, no library: a CPU job
        return None, []


class SystemMonitor:
    """Samples system metrics every `interval` seconds in a thread, one JSON line per sample."""

    def __init__(self, path, interval=0.5):
        self.path, self.interval = Path(path), interval
        self.stop_event = threading.Event()
        self.nvml, self.gpus = _gpu_handles()
        self.thread = threading.Thread(target=self._run, name="system-monitor", daemon=True)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join()

    def _sample(self, previous_disk, previous_net):
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        memory = psutil.virtual_memory()
        sample = {
            "timestamp": time.time(),
            "cpu_percent": psutil.cpu_percent(percpu=True),
            "memory_percent": memory.percent,
            "memory_used_mb": round(memory.used / 2**20, 1),
            "disk_read_bytes": (disk.read_bytes - previous_disk.read_bytes) if disk and previous_disk else 0,
            "disk_write_bytes": (disk.write_bytes - previous_disk.write_bytes) if disk and previous_disk else 0,
            "net_recv_bytes": (net.bytes_recv - previous_net.bytes_recv) if net and previous_net else 0,
            "net_sent_bytes": (net.bytes_sent - previous_net.bytes_sent) if net and previous_net else 0,
            # time the CPUs spent waiting for I/O (Linux): the IOBottleneck rule reads it
            "iowait_percent": getattr(psutil.cpu_times_percent(), "iowait", 0.0),
        }
        if self.gpus:
            sample["gpus"] = []
            for handle in self.gpus:
                utilisation = self.nvml.nvmlDeviceGetUtilizationRates(handle)
                memory_info = self.nvml.nvmlDeviceGetMemoryInfo(handle)
                sample["gpus"].append(
                    {
                        "utilization_percent": utilisation.gpu,
                        "memory_used_mb": round(memory_info.used / 2**20, 1),
                        "memory_percent": round(100 * memory_info.used / memory_info.total, 2),
                    }
                )
        return sample, disk, net

    def _run(self):
        psutil.cpu_percent(percpu=True)  # the first reading is meaningless: prime it
        psutil.cpu_times_percent()
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        with open(self.path, "a") as out:
            while not self.stop_event.wait(self.interval):
                sample, disk, net = self._sample(disk, net)
                out.write(json.dumps(sample) + "\n")
                out.flush()


# --- step timings -------------------------------------------------------------------------------
class StepTimer:
    """Per-step timings: how long the step waited for its batch, and how long it computed."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.out = open(self.path, "a")
        self.first_step_at = None

    def record(self, phase, epoch, step, started, data_ready, finished, forward_done=None):
        """forward_s: the forward pass alone (no DDP sync in it: what a straggling rank's own speed shows in)."""
        if self.first_step_at is None:
            self.first_step_at = started
        line = {
            "phase": phase,
            "epoch": epoch,
            "step": step,
            "start": started,
            "data_wait_s": round(data_ready - started, 6),
            "compute_s": round(finished - data_ready, 6),
            "end": finished,
        }
        if forward_done is not None:
            line["forward_s"] = round(forward_done - data_ready, 6)
        self.out.write(json.dumps(line) + "\n")

    def flush(self):
        self.out.flush()

    def close(self):
        self.out.close()


def write_job_info(path, resumed_after_epoch=None, **info):
    """The job's facts for the profiler report. A resumed job keeps the first start's facts (its
    init time, its steps) and adds one line to `resumes` per restart."""
    path = Path(path)
    process_started = psutil.Process(os.getpid()).create_time()
    info = {"process_started": process_started, "cpu_count": psutil.cpu_count(), **info}
    if resumed_after_epoch is not None and path.is_file():
        first = json.loads(path.read_text())
        restart = {
            "after_epoch": resumed_after_epoch,
            "process_started": process_started,
            "started": info.get("started"),
        }
        info = {**first, "resumes": first.get("resumes", []) + [restart]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))


# --- what survives an interruption ------------------------------------------------------------
# SageMaker gives a restarted spot job an empty output folder and only the checkpoint folder back
# (the local backend does the same), so the job's record is kept beside its checkpoint and put back
# on resume: the metrics, the profiler's files and the debug tensors then cover the whole run.
RECORD = (contract.METRICS_FILE, "profiler", "debug")


def keep_record(output_dir, keep_dir):
    """Copy what the job has recorded so far into keep_dir: new files, and those that grew since."""
    output_dir, keep_dir = Path(output_dir), Path(keep_dir)
    for name in RECORD:
        source = output_dir / name
        for path in [source] if source.is_file() else sorted(source.rglob("*")) if source.is_dir() else []:
            target = keep_dir / path.relative_to(output_dir)
            if not path.is_file() or (
                target.is_file()
                and target.stat().st_size == path.stat().st_size
                and target.stat().st_mtime_ns == path.stat().st_mtime_ns
            ):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with contract.written_whole(target) as partial:  # a kill leaves it whole, a full disk leaves nothing
                shutil.copy2(path, partial)


def restore_record(keep_dir, output_dir, epoch: int, debug_step):
    """Put the record kept at epoch `epoch`'s checkpoint back into output_dir, without what was
    written after that checkpoint: epochs after it, debug steps after `debug_step` (None: no debug steps)."""
    keep_dir, output_dir = Path(keep_dir), Path(output_dir)
    for name in RECORD:
        target = output_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
        if (keep_dir / name).is_dir():
            shutil.copytree(keep_dir / name, target, ignore=shutil.ignore_patterns("*" + contract.PARTIAL, "*.tmp"))
        elif (keep_dir / name).is_file():
            shutil.copy2(keep_dir / name, target)
    # the epochs' metrics and every rank's step timings (a DDP job's steps.rank<N>.jsonl too); the steps' values
    for log in (output_dir / contract.METRICS_FILE, *sorted(output_dir.glob("profiler/steps*.jsonl"))):
        _keep_lines(log, "epoch", epoch)
    for debug_log in (contract.BATCHES_FILE, contract.TENSORS_FILE):
        _keep_lines(output_dir / "debug" / debug_log, "step", debug_step)


def _keep_lines(log: Path, key: str, last):
    """A JSON-lines file without its lines whose `key` is past `last` (None: past everything)."""
    if log.is_file():
        lines = [
            line
            for line in log.read_text().splitlines()
            if line.strip() and last is not None and json.loads(line)[key] <= last
        ]
        log.write_text("".join(line + "\n" for line in lines))


# --- MLflow: the epochs into the job's run, as they end ---------------------------------------------
class EpochLogger:
    """Logs each epoch's metrics into the MLflow run the workflow made for this job (MLFLOW_RUN_ID in the store
    at MLFLOW_TRACKING_URI, step = epoch), as the epoch ends: a container's or SageMaker's job that can reach a
    server (a local job gets neither variable: its rule logs its epochs as it reads their lines, and the job never
    pays MLflow's import). Without those variables it does nothing. Without
    mlflow here (a container image that lacks it), or a store it cannot reach, it says so once and training goes
    on: the workflow logs what the job could not from metrics.jsonl after the job (dogbreed/runtime/tracking.py)."""

    def __init__(self, env=os.environ):
        self.client, self.run_id = None, env.get("MLFLOW_RUN_ID")
        if not (self.run_id and env.get("MLFLOW_TRACKING_URI")):
            return
        try:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        except ImportError:
            print(
                "mlflow is not installed in this job's environment: the workflow logs its metrics after it", flush=True
            )
        except Exception as error:  # a store it cannot open: the job trains on, the workflow logs its epochs
            print(
                f"could not open the MLflow store ({_first_line(error)}): the workflow logs this job's metrics after it",
                flush=True,
            )

    def log(self, epoch_metrics: dict):
        if self.client is None:
            return
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(epoch_metrics["epoch"])
        try:
            self.client.log_batch(
                self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in epoch_metrics.items() if k != "epoch"]
            )
        except Exception as error:  # the store went away: the epochs are in metrics.jsonl, the workflow logs them
            print(
                f"could not log epoch {step} into MLflow ({_first_line(error)}): the workflow logs the rest after the job",
                flush=True,
            )
            self.client = None


def _first_line(error) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
