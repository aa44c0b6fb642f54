"""The `local` backend: training jobs as subprocesses in /opt/ml-like job folders, endpoints as a local
waitress server running the model's own code/inference.py. Python only; uses a GPU when there is one.
"""

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import job_contract as contract
import psutil

from dogbreed.backends import job_launcher
from dogbreed.backends.base import HttpEndpointBackend, write_endpoint_state
from dogbreed.backends.errors import JobFailed, JobInterrupted
from dogbreed.data import store
from dogbreed.runtime import run_guard
from dogbreed.serving import server
from dogbreed.serving.model_archive import writing_model_tar
from dogbreed.training import metrics

WORKFLOW_DIR = Path(__file__).resolve().parents[2]  # workflow/: holds the dogbreed package


def _now():
    return datetime.now(UTC).isoformat(timespec="seconds")


def _tail(path: Path, lines=25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def pack_model_dir(model_dir: Path, tar_path: Path):
    """model/ → model.tar.gz with the files at the archive root, as SageMaker packs SM_MODEL_DIR."""
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with writing_model_tar(tar_path) as archive:
        for path in sorted(model_dir.rglob("*")):
            archive.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)


def _stop_when_asked(process):
    """In a thread beside the job: when the rule is told to stop (run_guard.stopping, which a signal reaches
    only in the main thread), stop the job, also when it runs in another thread (a parallel trial)."""
    while process.poll() is None:
        if run_guard.stopping.wait(0.5):
            job_launcher.signal_job(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # a job that ignores it (or is suspended): its checkpoint is whole
                job_launcher.signal_job(process.pid, signal.SIGKILL)
            return


def distributed_launch(processes: int, env: dict) -> list:
    """torchrun's arguments for `processes` DDP workers on this machine (one per GPU given, or CPU processes),
    and each worker's share of the CPU threads and loader workers in env."""
    gpus = (
        [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        if "CUDA_VISIBLE_DEVICES" in env
        else None
    )
    if gpus is None:
        import torch

        gpus = list(range(torch.cuda.device_count()))
    if gpus and processes > len(gpus):
        raise JobFailed(
            f"training.processes is {processes}, but this machine gives the job {len(gpus)} GPU(s): "
            f"at most one process per GPU"
        )
    cpus = int(env.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))
    share = str(max(1, cpus // processes))
    env.update(
        OMP_NUM_THREADS=share, MKL_NUM_THREADS=share, DOGBREED_DDP_TIMEOUT_S=env.get("DOGBREED_DDP_TIMEOUT_S", "300")
    )
    if not gpus:  # CPU processes: each its share of the loader workers too (with GPUs train.py divides by them)
        env["SM_NUM_CPUS"] = str(max(1, int(env.get("SM_NUM_CPUS") or len(os.sched_getaffinity(0))) // processes))
    # --standalone: a rendezvous on a free local port; a worker that dies ends the others (no restarts)
    return ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "--max_restarts=0"]


def _free_port(host) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class LocalBackend(HttpEndpointBackend):
    name = "local"

    def __init__(self, settings: dict):
        self.settings = settings  # the config's backends.local section

    # --- store -------------------------------------------------------------------------------
    def upload(self, local_dir, uri) -> dict:
        return store.sync(local_dir, uri)

    # --- training jobs -----------------------------------------------------------------------
    def launcher(self):
        """The launcher this process's jobs are forked from (job_launcher.py), or None: backends.local.preload is
        off, or not on Linux."""
        return job_launcher.shared() if self.settings.get("preload", True) and sys.platform == "linux" else None

    def prepare_jobs(self):
        self.launcher()  # it imports torch now, while the rule sets up (its MLflow run)

    def train(
        self,
        job_name,
        hyperparameters,
        channels,
        jobs_dir,
        source_dir,
        entry_point="train.py",
        on_line=None,
        echo=True,
        keep_model=True,
        environment=None,
        processes=1,
        instances=1,
    ) -> dict:
        """Run entry_point like a SageMaker training job; returns the job's description.

        on_line(line) is called for every output line; returning True stops the job (a pruned trial).
        """
        job = Path(jobs_dir).resolve() / job_name
        hps = dict(hyperparameters)
        lay_out_job(job, source_dir, hps)
        env = job_environment(job, job_name, hps, channels, environment)
        command = [sys.executable, entry_point] + [f"--{k}={v}" for k, v in hps.items()]
        launcher = None if processes > 1 else self.launcher()  # torchrun starts DDP's processes
        if processes > 1:
            command[1:1] = distributed_launch(processes, env)
        started = time.time()
        status, epochs = run_job_process(job_name, command, job, env, echo, on_line, launcher)
        recorded = job / "output/data" / contract.METRICS_FILE  # the whole run's epochs, also those before a resume
        if status == "Completed" and recorded.is_file():
            epochs = contract.read_metrics_file(recorded)
        result = {
            "job_name": job_name,
            "backend": self.name,
            "status": status,
            "log": str(job / "log.txt"),
            "output_dir": str(job / "output"),
            "hyperparameters": hps,
            "metrics": epochs,
            "seconds": round(time.time() - started, 1),
        }
        shutil.rmtree(job / "checkpoints", ignore_errors=True)  # finished or stopped: a rerun starts afresh
        if status == "Completed" and keep_model:
            tar_path = job / "output/model.tar.gz"
            pack_model_dir(job / "model", tar_path)
            result["model_uri"] = store.file_uri(tar_path)
        shutil.rmtree(job / "model", ignore_errors=True)
        return result

    # --- endpoints ---------------------------------------------------------------------------
    def deploy(self, model_tar, endpoint_name, state_dir) -> dict:
        """Serve model_tar (with code/inference.py inside) on 127.0.0.1; stop the previous server first."""
        state_dir = Path(state_dir).resolve()
        self.teardown(state_dir)
        model_dir = state_dir / "model"
        shutil.rmtree(model_dir, ignore_errors=True)
        model_dir.mkdir(parents=True)
        with tarfile.open(model_tar) as archive:
            archive.extractall(model_dir, filter="data")
        host = self.settings.get("host", "127.0.0.1")
        port = int(self.settings.get("port", 0)) or _free_port(host)
        url = f"http://{host}:{port}"
        log_path = state_dir / "server.log"
        # batching: concurrent requests' inputs in one forward pass (serving/server.py's Batcher); a batch holds
        # the requests of at most `threads` threads, so there are at least as many threads as batch places
        batch_size = int(self.settings.get("max_batch_size", 16))
        threads = max(int(self.settings.get("threads", 16)), batch_size)
        torch_threads = str(self.settings.get("torch_threads") or len(os.sched_getaffinity(0)))
        env = dict(
            os.environ,
            SM_MODEL_DIR=str(model_dir),
            SAGEMAKER_PROGRAM="inference.py",
            MAX_BATCH_SIZE=str(batch_size),
            MAX_BATCH_DELAY_MS=str(self.settings.get("max_batch_delay_ms", 10)),
            # OpenMP threads that spin after each forward pass take the cores the request threads decode on
            OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
            # the server outlives the rule that starts it: not the rule's one thread (Snakemake's OMP_NUM_THREADS)
            OMP_NUM_THREADS=torch_threads,
            MKL_NUM_THREADS=torch_threads,
            PYTHONPATH=os.pathsep.join([str(WORKFLOW_DIR), os.environ.get("PYTHONPATH", "")]),
        )
        # waitress reads each request whole (headers and body) in its event loop before a thread runs it:
        # a client that sends slowly, or not at all, holds no thread, and an idle connection is closed
        # after channel_timeout. Bodies over MAX_BODY_BYTES get the app's JSON 413; waitress refuses,
        # with its own plain 413 and unread, a body that says it is over twice that.
        command = [
            sys.executable,
            "-m",
            "waitress",
            f"--listen={host}:{port}",
            f"--threads={threads}",
            f"--channel-timeout={self.settings.get('channel_timeout', 20)}",
            "--cleanup-interval=5",
            f"--connection-limit={self.settings.get('connection_limit', 1000)}",
            f"--max-request-body-size={2 * server.MAX_BODY_BYTES}",
            "--no-expose-tracebacks",
            "--call",
            "dogbreed.serving.server:create_app",
        ]
        with open(log_path, "w") as log:
            # A new session: the server outlives this Snakemake job, and is stopped by pid group.
            process = subprocess.Popen(
                command,
                cwd=state_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        state = {
            "backend": self.name,
            "endpoint_name": endpoint_name,
            "url": url,
            "pid": process.pid,
            "pid_started": psutil.Process(process.pid).create_time(),
            "model": str(Path(model_tar).resolve()),
            "log": str(log_path),
            "started_at": _now(),
        }
        write_endpoint_state(state_dir, state)
        return self.wait_until_serving(
            state,
            state_dir,
            float(self.settings.get("startup_timeout", 120)),
            died=lambda: None if process.poll() is None else f"exited (code {process.returncode})",
            last_lines=lambda: _tail(log_path),
        )

    def stop_server(self, state, state_dir) -> list:
        stopped = []
        try:
            process = psutil.Process(state["pid"])
            # The pid must still be our server: pids are reused after a reboot or a long time.
            listening = f"--listen={urlsplit(state['url']).netloc}"
            if run_guard.is_recorded_process(state["pid"], state["pid_started"], listening):
                os.killpg(state["pid"], signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except psutil.TimeoutExpired:
                    os.killpg(state["pid"], signal.SIGKILL)
                stopped.append(f"{state['endpoint_name']} ({state['url']}, pid {state['pid']})")
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
        return stopped


def lay_out_job(job: Path, source_dir, hyperparameters: dict):
    """The job folder, laid out like SageMaker's /opt/ml: model/, output/data/, checkpoints/, input/config/ and the
    job's own copy of the code."""
    for stale in ("model", "output", "code"):
        shutil.rmtree(job / stale, ignore_errors=True)
    # checkpoints/ is kept: a rerun of the same job (same name = same inputs) resumes from it.
    for folder in ("model", "output/data", "checkpoints", "input/config"):
        (job / folder).mkdir(parents=True, exist_ok=True)
    # The job runs its own copy of the code, as SageMaker's /opt/ml/code: edits made while a
    # tuning study runs do not leak into its later trials.
    shutil.copytree(source_dir, job / "code", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # as SageMaker writes it: every value a string
    (job / "input/config/hyperparameters.json").write_text(
        json.dumps({k: str(v) for k, v in hyperparameters.items()}, indent=2)
    )


def job_environment(job: Path, job_name, hyperparameters: dict, channels: dict, environment=None) -> dict:
    """The SM_* variables SageMaker's training toolkit sets; an S3 channel is copied in first (File mode)."""
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        SM_MODEL_DIR=str(job / "model"),
        SM_OUTPUT_DATA_DIR=str(job / "output/data"),
        SM_CHECKPOINT_DIR=str(job / "checkpoints"),
        SM_HPS=json.dumps(hyperparameters),
        SM_CHANNELS=json.dumps(sorted(channels)),
        SM_CURRENT_HOST="algo-1",
        SM_HOSTS=json.dumps(["algo-1"]),
        SM_TRAINING_ENV=json.dumps({"job_name": job_name}),
        **(environment or {}),
    )
    for channel, uri in channels.items():
        if uri.startswith("s3://"):  # as SageMaker's File mode: the channel is copied in first
            folder = job / "input/data" / channel
            store.download(uri, folder)
            env[f"SM_CHANNEL_{channel.upper()}"] = str(folder)
        else:
            env[f"SM_CHANNEL_{channel.upper()}"] = str(store.local_path(uri).resolve())
    return env


def start_job_process(command, cwd, env, launcher=None):
    """The job's process in its own session, stdout and stderr one pipe of text: forked by the launcher when there
    is one and the job's environment lets it (job_launcher.forkable), else a fresh Python."""
    if launcher is not None:
        try:
            if (why := job_launcher.unforkable(launcher.environment, env)) is None:
                return launcher.start(command, cwd, env)
            print(f"job launcher: this job starts as a fresh Python, seconds slower: {why}", flush=True)
        except job_launcher.LauncherUnavailable:
            pass  # the job starts the slow way (a launcher of the rule's own says why in its log)
    return subprocess.Popen(  # line by line: `tail -f` works
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        start_new_session=True,
    )


def run_job_process(job_name, command, job: Path, env, echo, on_line, launcher=None) -> tuple:
    """Run the job's process (start_job_process), its lines into job/log.txt (and the terminal when echo);
    (status, the epochs its lines reported). JobFailed when it fails."""
    log_path = job / "log.txt"
    status, epochs = "Completed", []
    if run_guard.stopping.is_set():  # told to stop before it started (a signal, a tracking store that failed)
        raise JobInterrupted(f"training job {job_name} stopped before it started")
    with (
        run_guard.job_running(f"training job {job_name}"),
        open(log_path, "w", buffering=1) as log,
        start_job_process(command, job / "code", env, launcher) as process,
    ):
        threading.Thread(target=_stop_when_asked, args=(process,), daemon=True).start()
        try:
            for line in process.stdout:
                log.write(line)
                if echo:
                    print(line, end="", flush=True)
                if (parsed := metrics.parse_epoch_line(line)) is not None:
                    epochs.append(parsed)
                if on_line is not None and on_line(line):
                    status = "Stopped"
                    job_launcher.signal_job(process.pid, signal.SIGTERM)
                    break
            process.wait()
        finally:  # Ctrl-C, Snakemake stopping us, or a torchrun that died: nothing of the job's group outlives it
            job_launcher.signal_job(process.pid, signal.SIGKILL)
        if status != "Stopped" and process.returncode != 0 and run_guard.stopping.is_set():
            raise JobInterrupted(f"training job {job_name} stopped")  # by _stop_when_asked: its checkpoint kept
    if status != "Stopped" and process.returncode != 0:
        tail = _tail(log_path)
        if full := re.search(r"No space left on device: '([^']+)'", tail):  # the cause, not 25 lines
            # the OSError, for rule_runner.disk_full: the space left there and the setting that moves that folder
            raise JobFailed(f"training job {job_name} ran out of disk space (log: {log_path})") from OSError(
                errno.ENOSPC, "No space left on device", full.group(1)
            )
        why = f", {process.ended_by}" if getattr(process, "ended_by", None) else ""
        raise JobFailed(
            f"training job {job_name} failed (exit code {process.returncode}{why}); last lines of {log_path}:\n{tail}"
        )
    return status, epochs
