"""What the training job records about itself, so debugger and profiler rules can run on any backend.

SageMaker Debugger is closed to new customers and its profiler is ending, so the job writes its own
evidence under SM_OUTPUT_DATA_DIR (which SageMaker returns in output.tar.gz):
  debug/                    smdebug tensors every save_interval steps: weights / biases / gradients / ReLU
                            inputs (reductions only: full tensors would be hundreds of MB)
  debug/batches.jsonl       one line per step: its smdebug step number, mode, loss, labels and predictions
                            (every step, so the loss rules compare real windows and ClassImbalance sees
                            the whole class mix; a line costs microseconds, an smdebug step tens of ms)
  profiler/system.jsonl     one line per sampling interval: CPU per core, memory, disk and network I/O,
                            GPU utilisation and memory (NVML) when there is a GPU
  profiler/steps.jsonl      one line per step: phase, epoch, start, data-wait and compute seconds
  profiler/job.json         start time, init time (process start → first step), device, loader workers …
"""

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import job_contract as contract
import psutil


# --- smdebug on NumPy 2 -------------------------------------------------------------------------
def patch_smdebug_for_numpy2():
    """smdebug 1.0.34 serialises tensors with ndarray.tostring(), which NumPy 2 removed; use tobytes().

    Swaps make_tensor_proto where smdebug defined it and where its writer imported it. Idempotent.
    """
    import smdebug.core.tfevent.util as tfevent_util
    from smdebug.core import writer
    from smdebug.core.tfevent.proto.tensor_pb2 import TensorProto
    from smdebug.core.tfevent.proto.tensor_shape_pb2 import TensorShapeProto

    def make_tensor_proto(nparray_data, tag):
        is_number, dtype = tfevent_util._get_proto_dtype(nparray_data.dtype)
        shape = TensorShapeProto(dim=[TensorShapeProto.Dim(size=d, name=f"{tag}_{d}") for d in nparray_data.shape])
        if is_number:
            return TensorProto(dtype=dtype, tensor_content=nparray_data.tobytes(), tensor_shape=shape)
        proto = TensorProto(tensor_shape=shape)
        for value in nparray_data:
            proto.string_val.append(bytes(value, encoding="utf-8"))
        return proto

    make_tensor_proto.numpy2_shim = True
    tfevent_util.make_tensor_proto = make_tensor_proto
    writer.make_tensor_proto = make_tensor_proto


def create_debug_hook(out_dir, save_interval: int):
    """An smdebug hook saving what the Debugger rules read of the network, at a size a long run can afford: its
    steps' losses, labels and predictions go into BatchRecord instead (a file line a step, not an smdebug step)."""
    patch_smdebug_for_numpy2()
    import smdebug.pytorch as smd
    from smdebug.core.reduction_config import ReductionConfig
    from smdebug.core.save_config import SaveConfig

    hook = smd.Hook(
        out_dir=str(out_dir),
        save_config=SaveConfig(save_interval=save_interval),
        include_collections=["weights", "biases", "gradients", "relu_input"],
    )
    # Each reduction is a pass over the tensor and an event of its own at every saved step: only those a rule or
    # a report reads (dogbreed/checks). max, min and l2 everywhere: ExplodingTensor (a NaN or an infinity
    # anywhere shows in them); |max| its evidence; variance of the weights PoorWeightInitialization's; the ReLU
    # inputs' range (max - min) its trigger; mean |gradient| VanishingGradient's.
    for name, reductions, abs_reductions in (
        ("weights", ["max", "min", "variance"], ["max"]),
        ("biases", ["max", "min"], ["max"]),
        ("gradients", ["max", "min"], ["mean", "max"]),
        ("relu_input", ["max", "min"], []),
    ):
        hook.get_collection(name).reduction_config = ReductionConfig(
            reductions=reductions, abs_reductions=abs_reductions, norms=["l2"]
        )
    hook.get_collection("relu_input").include(r".*relu_input_0")
    return hook


class BatchRecord:
    """debug/batches.jsonl: each step's smdebug step number, mode (TRAIN, EVAL), loss, labels and predictions, kept
    in memory and written at each epoch's end (flush), with the hook's tensors."""

    def __init__(self, debug_dir):
        self.path = Path(debug_dir) / contract.BATCHES_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lines = []

    def add(self, step: int, training: bool, loss: float, labels, predictions):
        self.lines.append(
            json.dumps(
                {
                    "step": step,
                    "mode": "TRAIN" if training else "EVAL",
                    "loss": loss,
                    "labels": labels.tolist(),
                    "predictions": predictions.tolist(),
                }
            )
        )

    def flush(self):
        with open(self.path, "a") as out:
            out.writelines(line + "\n" for line in self.lines)
        self.lines = []


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
            if (
                not path.is_file()
                or path.name == "claim.smd"
                or (
                    target.is_file()
                    and target.stat().st_size == path.stat().st_size
                    and target.stat().st_mtime_ns == path.stat().st_mtime_ns
                )
            ):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with contract.written_whole(target) as partial:  # a kill leaves it whole, a full disk leaves nothing
                shutil.copy2(path, partial)


def _step_of(path: Path):
    """The global step an smdebug file belongs to (events/000000000042/000000000042_worker_0.tfevents)."""
    match = re.match(r"(\d{12})_", path.name)
    return int(match.group(1)) if match else None


def restore_record(keep_dir, output_dir, epoch: int, debug_step):
    """Put the record kept at epoch `epoch`'s checkpoint back into output_dir, without what was
    written after that checkpoint: epochs after it, debug steps after `debug_step`."""
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
    _keep_lines(output_dir / "debug" / contract.BATCHES_FILE, "step", debug_step)
    debug = output_dir / "debug"
    if debug.is_dir():
        for path in [p for p in debug.rglob("*") if p.is_file()]:
            step = _step_of(path)
            if step is not None and (debug_step is None or step > debug_step):
                path.unlink()
        for marker in ("training_job_end.ts", "claim.smd"):  # smdebug's: the job's end, the writing process
            (debug / marker).unlink(missing_ok=True)


def _keep_lines(log: Path, key: str, last):
    """A JSON-lines file without its lines whose `key` is past `last` (None: past everything)."""
    if log.is_file():
        lines = [
            line
            for line in log.read_text().splitlines()
            if line.strip() and last is not None and json.loads(line)[key] <= last
        ]
        log.write_text("".join(line + "\n" for line in lines))


def debug_hook_state(hook):
    """Where the hook's step counters stand, as smdebug itself keeps them across a restart."""
    return {"step": hook.step, "mode_steps": {mode.name: step for mode, step in hook.mode_steps.items()}}


def flush_debug_hook(hook):
    """Write out the step in progress: smdebug keeps a step's file open until the next step starts."""
    hook._close_writers()


def resume_debug_hook(hook, state):
    """Continue the step numbering of a hook saved with debug_hook_state (smdebug does the same when
    SageMaker hands it its checkpoint config): the next step after the resume is state["step"] + 1."""
    from smdebug.core.modes import ModeKeys

    hook.init_step = hook.step = state["step"]
    hook.mode_steps = {ModeKeys[mode]: step for mode, step in state["mode_steps"].items()}
    hook.mode_steps[ModeKeys.GLOBAL] = state["step"]


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
