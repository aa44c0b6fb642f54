"""Local jobs started from a Python that has imported torch already.

`python train.py` spends seconds importing torch and torchvision before its first step (BENCHMARKS.md: the demo
against its arithmetic): most of a small job's fixed cost, paid again by every tuning trial. The launcher is a
process that imports them once, then forks one child per job. The child becomes the job as `python <entry point>
<flags>` would: its own session, working folder, argv, environment, thread count, stdout and stderr into the job's
pipe, stdin from /dev/null. It then runs the entry point as __main__, and its exit code and a traceback are those of
a fresh Python.

This file is both sides:
- the launcher, run as a script: the Snakemake run's (`python job_launcher.py --run <address> <Snakemake's pid>
  torch torchvision`), which the run's rules share, each over a channel of its own to an abstract Unix socket; or
  a process's own (`python job_launcher.py <fd> torch torchvision`, over a socket pair), outside a Snakemake run.
  Of the workflow's package it imports only runtime/script_end.py (standard library alone: how a job's process
  ends), and none of the job code, so a job sees only its own copy of that;
- JobLauncher, the local backend's side. JobLauncher.start returns a ForkedJob, which the backend uses like a
  subprocess.Popen.

The launcher runs no torch code itself, so torch's thread pools do not exist yet when it forks; the one thread the
imports start (OpenBLAS's, loaded by numpy) is made safe across fork by OpenBLAS's own fork handlers, and numpy's
matrix products in a job keep the launcher's OpenBLAS threads. It is used on Linux only: there fork after these
imports is what torch's own DataLoader workers do. The messages are JSON: a hello (the launcher's environment, once
its imports are done), requests, each with the job's output pipe attached, and replies (started or refused, exited).
"""

import atexit
import contextlib
import errno
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

# what a job imports that takes seconds (torchvision imports PIL and torch._dynamo with it)
PRELOAD = ("torch", "torchvision")
MAX_MESSAGE = 1 << 20  # a request: the job's argv, folder and environment
READY_S = 300  # torch's import on a loaded machine, with room: a launcher not ready by then is not waited for

# Variables a library may read while it is being imported (thread pools, allocators, the interpreter's own), so
# a job whose value differs from the launcher's starts a fresh Python. The job contract's own variables differ
# from job to job and are read when the job runs; OMP_NUM_THREADS (with MKL_NUM_THREADS) is applied in the child.
IMPORT_TIME_PREFIXES = (
    *("OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "LD_", "PYTHON", "TORCH", "PYTORCH_", "CUDA_"),
    *("LANG", "LC_"),  # the encodings of stdout and of open()
)
SET_IN_CHILD = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONUNBUFFERED", "CUDA_VISIBLE_DEVICES"}


class LauncherUnavailable(RuntimeError):
    """The launcher has exited (it could not import what it preloads, or it was killed): start a fresh Python."""


def unforkable(launcher_env: dict, job_env: dict) -> str | None:
    """Why a child of a launcher started with launcher_env would not run as a fresh Python with job_env would (the
    variable, by name only: values may be paths), or None when it would."""
    for key in sorted(launcher_env.keys() | job_env.keys()):
        if (
            key.startswith(IMPORT_TIME_PREFIXES)
            and key not in SET_IN_CHILD
            and launcher_env.get(key) != job_env.get(key)
        ):
            return f"{key}, read while torch is imported, differs between the job and the launcher"
    # the child sets torch's threads to the job's OMP_NUM_THREADS (both torch's OpenMP and MKL); a job without one
    # would keep the launcher's where a fresh Python takes every core
    threads = job_env.get("OMP_NUM_THREADS")
    if threads is None:
        if any(launcher_env.get(key) != job_env.get(key) for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
            return "the job sets no OMP_NUM_THREADS, and the launcher's would not be a fresh Python's"
        return None
    if job_env.get("MKL_NUM_THREADS") not in (None, threads):
        return "the job's MKL_NUM_THREADS is not its OMP_NUM_THREADS"
    return None


def forkable(launcher_env: dict, job_env: dict) -> bool:
    """Whether a child of a launcher started with launcher_env runs as a fresh Python with job_env would."""
    return unforkable(launcher_env, job_env) is None


# --- the launcher (the script) ---------------------------------------------------------------------------


def serve(preload, channel=None, listener=None, owner=None):
    """Import preload, then fork a job per request: on its one channel until the other side closes it (a rule's own
    launcher), or on every channel the listener accepts (the run's launcher, shared by its rules) until the run has
    ended (owner, the Snakemake process's pidfd, or an "end" request) and no rule is connected any more."""
    import importlib

    # what a job's environment is compared with: the one the launcher started with (an import may set variables)
    hello = json.dumps({"environment": dict(os.environ)}).encode()
    os.close(os.pidfd_open(os.getpid()))  # a kernel without pidfds fails here, before any job is forked
    for name in preload:
        importlib.import_module(name)
    channels = {}  # channel → the pidfds of the jobs it started that still run
    running = {}  # pidfd → (pid, the channel that started it)

    def connected(new):
        channels[new] = set()
        with contextlib.suppress(OSError):  # its rule ended at once (an "end" request): its EOF comes next
            new.send(hello)

    if channel is not None:
        connected(channel)
    while channels or listener is not None:
        watched = [*channels, *running, *([listener, owner] if listener is not None else [])]
        readable, _, _ = select.select(watched, [], [])
        for ready in readable:
            if listener is not None and ready is listener:
                try:
                    accepted, _ = listener.accept()
                except OSError:  # out of file descriptors: no new rule (each starts a launcher of its own)
                    listener, owner = stop_listening(listener, owner)
                    break
                if peer(accepted)[1] == os.getuid():  # an abstract socket has no file permissions
                    connected(accepted)
                else:
                    accepted.close()
            elif owner is not None and ready == owner:
                # the run has ended: no new rule; the connected ones stop their jobs themselves, then end
                listener, owner = stop_listening(listener, owner)
                break  # the closed pidfd's number may come back as a job's: select again
            elif ready in channels:
                try:
                    message, fds, _, _ = socket.recv_fds(ready, MAX_MESSAGE, 1)
                except ConnectionResetError:  # it closed with our replies unread (its "end" sent): the same as EOF
                    message, fds = b"", []
                request = readable_request(message)
                if request is None:
                    # its rule's process has ended (killed, if a job still runs), or it is not this file's client:
                    # that channel and its jobs go, the other rules' run on
                    for fd in fds:
                        os.close(fd)
                    for pidfd in channels.pop(ready):
                        kill_job(running[pidfd][0])
                    ready.close()
                    continue
                if request.get("end"):
                    listener, owner = stop_listening(listener, owner)
                    channels.pop(ready)
                    ready.close()  # what asked reads to this close (end_run_launcher): nothing is left unread
                    break
                start_job(request, fds, ready, channels, running, listener, owner)
            elif ready in running:  # a job has ended (what else was ready may have been closed meanwhile)
                pid, started_by = running.pop(ready)
                os.close(ready)
                _, status = os.waitpid(pid, 0)
                if started_by in channels:
                    channels[started_by].discard(ready)
                    with contextlib.suppress(OSError):  # its rule has just ended: its EOF comes next
                        started_by.send(
                            json.dumps({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}).encode()
                        )


def readable_request(message: bytes) -> dict | None:
    """A request of this file's client (a job to start, or the run's end), or None: the channel has closed (an empty
    message), or what came is not one."""
    try:
        request = json.loads(message) if message else None
    except ValueError:
        return None
    if isinstance(request, dict) and (request.get("end") or {"id", "argv"} <= request.keys()):
        return request
    return None


def start_job(request, fds, channel, channels, running, listener, owner):
    """Fork the requested job, watch it (a pidfd) and tell its rule; a job that cannot be started (fork fails: out
    of memory or processes) is refused to that rule alone, which starts it as a fresh Python."""
    try:
        if len(fds) != 1:
            raise OSError("the request came without the job's output pipe")
        pid = os.fork()
    except OSError as error:
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            channel.send(json.dumps({"id": request.get("id"), "refused": str(error)}).encode())
        return
    if pid == 0:
        for other in channels:
            other.close()
        for fd in running:
            os.close(fd)
        stop_listening(listener, owner)
        become_job(request, fds[0])  # never returns
    os.close(fds[0])
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as error:  # a job the launcher cannot watch must not run: refused like a failed fork
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with contextlib.suppress(OSError):
            channel.send(json.dumps({"id": request["id"], "refused": str(error)}).encode())
        return
    running[pidfd] = (pid, channel)
    channels[channel].add(pidfd)
    try:
        channel.send(json.dumps({"id": request["id"], "pid": pid}).encode())
    except OSError:
        kill_job(pid)  # its rule has just ended: a job it never hears of must not run (it would start it again)


def stop_listening(listener, owner) -> tuple:
    """The run's launcher takes no new rule: its socket and its watch on the run closed; (None, None)."""
    if listener is not None:
        listener.close()
        os.close(owner)
    return None, None


def peer(connection: socket.socket) -> tuple:
    """(pid, uid) of the process at the other end of a Unix socket, as the kernel knows it."""
    pid, uid, _gid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


def become_job(request: dict, output_fd: int):
    """In the forked child: the job's process as a fresh `python <argv[1:]>` in its own session would be, then its
    entry point run as __main__ (run_as_main), then its exit as a script's. Never returns, whatever fails."""
    code, interrupted = 1, False
    try:
        set_up_as_fresh(request, output_fd)
        script, *arguments = request["argv"][1:]
        sys.argv = [script, *arguments]
        script = os.path.abspath(script)  # a script's __file__, as Python gives it
        if not os.path.isfile(script):
            print(f"{sys.executable}: can't open file {script!r}: [Errno 2] No such file or directory", file=sys.stderr)
            code = 2
            return
        sys.path[0] = os.path.dirname(script)  # where `python script` looks first
        try:
            run_as_main(script)
            code = 0
        except SystemExit as exit:
            code = exit_code(exit)
        except BaseException as error:
            print_traceback(error, script)
            interrupted = isinstance(error, KeyboardInterrupt)
        script_end()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        if interrupted:  # as Python ends after an unhandled KeyboardInterrupt: by SIGINT
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code & 0xFF)


def set_up_as_fresh(request: dict, output_fd: int):
    """The process a fresh Python started by subprocess (start_new_session, stdin from /dev/null, stdout and stderr
    into one pipe) would be, with the job's folder, environment and thread count."""
    import io

    os.setsid()  # as subprocess's start_new_session: the backend stops the job by its process group
    # the launcher ignores these (the backend's rule stops its jobs itself); a fresh Python's own handlers
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # a pipe: block-buffered stdout unless PYTHONUNBUFFERED, line-buffered stderr (Python's own choices)
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    encoding = sys.stdout.encoding
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding, sys.stdout.errors, write_through=unbuffered
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding, "backslashreplace", line_buffering=True, write_through=unbuffered
    )
    if "torch" in sys.modules and os.environ.get("OMP_NUM_THREADS"):
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if "numpy" in sys.modules:  # every child would draw numpy's unseeded numbers from the launcher's one state
        sys.modules["numpy"].random.seed()


def run_as_main(script: str):
    """Run the script as Python runs `python script`: a new __main__ module (the launcher's own is replaced for good)
    with the script's __file__ and loader, its code compiled as the interpreter would (its encoding line)."""
    import importlib.machinery
    import types

    loader = importlib.machinery.SourceFileLoader("__main__", script)
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=script, __loader__=loader, __builtins__=__builtins__, __cached__=None)
    sys.modules["__main__"] = main
    exec(loader.get_code("__main__"), main.__dict__)  # noqa: S102 (running the job's script is the point)


def exit_code(exit: SystemExit) -> int:
    """The exit code Python gives sys.exit(value): None 0, an int itself, anything else printed and 1."""
    if exit.code is None:
        return 0
    if isinstance(exit.code, int):
        return exit.code
    print(exit.code, file=sys.stderr)
    return 1


def print_traceback(error: BaseException, script: str):
    """The traceback a fresh Python prints: from the script's own frames (not the launcher's, nor importlib's for a
    SyntaxError in the script, which Python shows as its file and line alone)."""
    import traceback

    frames = error.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename != script:
        frames = frames.tb_next
    if frames is None and not isinstance(error, SyntaxError):
        frames = error.__traceback__
    traceback.print_exception(type(error), error, frames)


def main():
    # A rule stops its jobs itself, and needs the launcher until they have exited (their exit codes); the launcher
    # ends when its rules' processes do (their channels close), the run's once the run has ended too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    global script_end
    try:
        script_end = _script_end()
        if sys.argv[1] == "--run":  # the run's launcher: job_launcher.py --run <address> <Snakemake's pid> <preload>
            owner = os.pidfd_open(int(sys.argv[3]))  # no pidfds, or the run has ended: no launcher (fresh Pythons)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                listener.bind("\0" + sys.argv[2])
            except OSError as error:
                if error.errno == errno.EADDRINUSE:  # another rule started this run's launcher at the same moment
                    os._exit(0)
                raise
            listener.listen()
            serve(sys.argv[4:], listener=listener, owner=owner)
        else:  # a process's own: job_launcher.py <the channel's fd> <preload>
            serve(sys.argv[2:], channel=socket.socket(fileno=int(sys.argv[1])))
    except Exception as error:  # an import that fails, mostly: the backend starts fresh Pythons
        sys.exit(f"job launcher: {type(error).__name__}: {error}; jobs start as fresh Pythons")
    # its jobs are over, and it has nothing to flush: ended without tearing down torch's modules (about a second
    # the rule would wait for, as it waits for the launcher's exit)
    os._exit(0)


def _script_end():
    """runtime/script_end.py's script_end, how the launcher's jobs end (as a rule script does), imported from the
    package's folder whatever PYTHONPATH says; the folder is not left on sys.path, which the jobs inherit."""
    sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        from dogbreed.runtime.script_end import script_end
    finally:
        sys.path.pop()
    return script_end


script_end = None  # set by main, in the launcher's process


# --- the backend's side ----------------------------------------------------------------------------------


class ForkedJob:
    """A job the launcher forked, with what the local backend uses of a subprocess.Popen: pid, stdout (text,
    line by line), poll(), wait(timeout), returncode, and `with` (closes stdout, waits)."""

    def __init__(self, pid: int, stdout_fd: int, args):
        self.pid, self.args, self.returncode = pid, args, None
        self.stdout = open(stdout_fd, encoding=None)  # the locale's, as Popen(text=True)
        self.ended_by = None  # what ended it, when not its own code: said beside its exit code
        self._ended = threading.Event()

    def _exited(self, returncode: int, ended_by=None):
        self.returncode, self.ended_by = returncode, ended_by
        self._ended.set()

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stdout.close()
        self.wait()


def signal_job(pid: int, signum: int):
    """signum to the job's process group (torchrun's workers, a loader's, with it), or to the job alone if it has not
    made its session yet (just forked); nothing if it has ended."""
    for send in (os.killpg, os.kill):
        try:
            return send(pid, signum)
        except ProcessLookupError:
            continue


def kill_job(pid: int):
    signal_job(pid, signal.SIGKILL)


_shared, _shared_lock = None, threading.Lock()


def shared() -> "JobLauncher | None":
    """This process's launcher, on first use: the Snakemake run's, which its rules share (the tuning's trials, then
    the final training, find torch imported), started by the first rule that needs it; outside a Snakemake run (by
    hand, a test), a launcher of this process's own. None when no launcher can be started: jobs start fresh."""
    global _shared
    with _shared_lock:
        if _shared is None:
            from dogbreed.runtime import run_guard

            snakemake = run_guard.snakemake_process()
            try:
                _shared = JobLauncher(run=run_address(snakemake.pid, snakemake.create_time()) if snakemake else None)
            except (LauncherUnavailable, OSError):  # the run's could not start, or is not this user's: one of its own
                with contextlib.suppress(OSError):
                    _shared = JobLauncher()
        return _shared


def run_address(pid: int, started: float) -> tuple:
    """(the abstract socket's name, the run's pid) of the launcher of the Snakemake run with that pid and start time
    (psutil's create_time): one name per run, for this user alone (peer's uid is checked on both sides)."""
    return f"dogbreed-job-launcher-{os.getuid()}-{pid}-{round(started * 1000)}", pid


def end_run_launcher(address=None, timeout=10.0):
    """At the end of the Snakemake run (its onsuccess / onerror, in its own process: address None): its launcher, if
    one was started, takes no more rules and exits once none is connected (by then, none); its exit is waited for,
    up to timeout seconds, so that the run's end is the launcher's too."""
    if address is None:
        import psutil

        me = psutil.Process()
        address = run_address(me.pid, me.create_time())
    try:
        channel = _dial(address[0])
    except (OSError, LauncherUnavailable):  # not this user's, or no answer: nothing of this run's to end
        return
    if channel is None:  # none was started (no local job ran), or it has gone
        return
    try:
        ended = os.pidfd_open(peer(channel)[0])
    except ProcessLookupError:
        ended = None
    with contextlib.suppress(OSError):
        channel.send(json.dumps({"end": True}).encode())
        channel.settimeout(timeout)
        # its hello, then its close: a channel closed with a reply unread is reset, and the "end" lost with it
        while channel.recv(MAX_MESSAGE):
            pass
    channel.close()
    if ended is not None:
        select.select([ended], [], [], timeout)
        os.close(ended)


def _dial(name: str) -> socket.socket | None:
    """A channel to the launcher listening at name, or None when none listens. LauncherUnavailable when what listens
    is not this user's: a job's environment, its credentials among them, would go to it."""
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        channel.connect("\0" + name)
    except (ConnectionRefusedError, FileNotFoundError):
        channel.close()
        return None
    if peer(channel)[1] != os.getuid():
        channel.close()
        raise LauncherUnavailable(f"the socket {name!r} is another user's")
    return channel


def _connect(address: tuple, preload) -> socket.socket:
    """A channel to the run's launcher at address, which is started first when there is none yet. It binds its
    name before its imports, so this waits milliseconds; LauncherUnavailable when it cannot start, or when what
    answers is not this user's."""
    name, owner = address
    starting, deadline = None, time.monotonic() + 30
    while time.monotonic() < deadline:
        if (channel := _dial(name)) is not None:
            return channel
        if starting is None:
            starting = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--run", name, str(owner), *preload],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # it outlives the rule that starts it, and no signal to the rule reaches it
            )
        elif starting.poll() is not None:
            if starting.returncode != 0:
                raise LauncherUnavailable("the run's job launcher could not start")
            starting = None  # it lost to another rule's, which answers next (or, gone since, is started anew)
        time.sleep(0.01)
    raise LauncherUnavailable("the run's job launcher did not answer within 30 s")


class JobLauncher:
    """A launcher process and its replies, read by a thread: the Snakemake run's at run (run_address), started if
    need be; else one of this process's own, started with this process's environment, which ends with it."""

    def __init__(self, preload=PRELOAD, run=None):
        self._process = None
        if run is None:
            self._channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._process = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), str(theirs.fileno()), *preload],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=dict(os.environ),
            )
            theirs.close()
        else:
            self._channel = _connect(run, preload)
        self._lock, self._ready = threading.Lock(), threading.Event()
        self._environment, self._next_id, self._starting, self._jobs, self._gone = None, 0, {}, {}, False
        threading.Thread(target=self._read_replies, name="job-launcher", daemon=True).start()
        atexit.register(self.close)

    @property
    def environment(self) -> dict:
        """The launcher's environment (a job whose own differs where it matters starts fresh: forkable), once its
        imports are done. LauncherUnavailable when it exited before, or is not ready within READY_S."""
        if not self._ready.wait(READY_S) or self._environment is None:
            with self._lock:
                self._gone = True  # not waited for again: every later job starts fresh
            raise LauncherUnavailable("the job launcher was not ready")
        return self._environment

    def start(self, argv: list, cwd, env: dict) -> ForkedJob:
        """Fork the job `argv` (sys.executable first) in cwd with env. LauncherUnavailable when the launcher has
        exited: the caller starts a fresh Python instead."""
        read_end, write_end = os.pipe()
        try:
            with self._lock:
                if self._gone:
                    raise LauncherUnavailable("the job launcher has exited")
                request_id, self._next_id = self._next_id, self._next_id + 1
                started = self._starting[request_id] = {"event": threading.Event(), "stdout": read_end, "args": argv}
                request = {"id": request_id, "argv": [str(a) for a in argv], "cwd": str(cwd), "env": env}
                try:
                    socket.send_fds(self._channel, [json.dumps(request).encode()], [write_end])
                except OSError as error:
                    self._starting.pop(request_id)
                    raise LauncherUnavailable(f"the job launcher has exited ({error})") from None
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        try:
            started["event"].wait()
        except BaseException:  # Ctrl-C while the launcher forks: the job is stopped when it comes (_read_replies)
            with self._lock:
                started["cancelled"] = True
                if "job" in started:
                    kill_job(started["job"].pid)
                    started["job"].stdout.close()
            raise
        if "job" not in started:
            os.close(read_end)
            raise LauncherUnavailable(started.get("refused") or "the job launcher exited before it started the job")
        return started["job"]

    def _read_replies(self):
        while True:
            try:
                message = self._channel.recv(MAX_MESSAGE)
            except OSError:
                message = b""
            if not message:
                break
            reply = json.loads(message)
            with self._lock:
                if "environment" in reply:  # its imports are done
                    self._environment = reply["environment"]
                    self._ready.set()
                elif "refused" in reply:  # it could not fork this one: the backend starts it as a fresh Python
                    if (started := self._starting.pop(reply.get("id"), None)) is not None:
                        started["refused"] = reply["refused"]
                        if started.get("cancelled"):  # no start() waits for it any more
                            os.close(started["stdout"])
                        started["event"].set()
                elif "id" in reply:
                    started = self._starting.pop(reply["id"])
                    started["job"] = self._jobs[reply["pid"]] = ForkedJob(
                        reply["pid"], started["stdout"], started["args"]
                    )
                    if started.get("cancelled"):  # its start was interrupted: no one reads or waits for it
                        kill_job(reply["pid"])
                        started["job"].stdout.close()
                    started["event"].set()
                else:
                    self._jobs.pop(reply["pid"])._exited(reply["returncode"])
        self._launcher_gone()

    def _launcher_gone(self):
        """No more replies: a job not yet started never will be, and a running one's exit code cannot be known; it is
        killed (its process group) and ends as killed."""
        with self._lock:
            self._gone = True
            self._ready.set()
            for started in self._starting.values():
                started["event"].set()
            self._starting.clear()
            for job in self._jobs.values():
                kill_job(job.pid)
                job._exited(-signal.SIGKILL, "killed: its job launcher exited, so its exit code could not be known")
            self._jobs.clear()

    def close(self):
        """This process's end of the channel: its jobs still running are killed (they are the backend's to stop
        first). A launcher of its own then exits, and is waited for; the run's goes on for the other rules."""
        with contextlib.suppress(OSError):
            self._channel.shutdown(socket.SHUT_RDWR)
        self._channel.close()
        if self._process is None:
            return
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


if __name__ == "__main__":
    main()
