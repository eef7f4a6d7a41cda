"""A fork server: starts alto's processes fast, and makes sure none outlives its app.

Starting a fresh Python for every stage instance costs about a second of imports
(LangGraph); forking a process that has imported them costs milliseconds. So the
first deployment of a Python process starts one fork server (``python -m
alto_langgraph.process._fork_main``, a clean interpreter, never a fork of the app, whose
threads would not survive a fork) and asks it for routers and stage instances.

No orphans: the app holds the only write end of a *lifeline* pipe; the fork server and
every process it forks hold the read end and exit as soon as it reports end-of-file,
which the kernel does when the app exits for any reason, SIGKILL included. The fork
server reaps its children and reports each exit, so the app can fail the calls a dead
instance held and restart it.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import pickle
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

_LEN = struct.Struct("!I")
#: how the app stops one of its processes before resorting to SIGKILL
STOP_SIGNAL = signal.SIGUSR1
TARGETS = {
    "router": "alto_langgraph.process.router:serve",
    "worker": "alto_langgraph.process.worker:serve",
    "ray_head": "alto_langgraph.process.ray_cluster:serve_head",
}


def _write_msg(fd: int, msg: Any) -> None:
    data = pickle.dumps(msg)
    data = _LEN.pack(len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


class _Reader:
    """Length-prefixed pickled messages from a pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def read(self) -> list[Any] | None:
        """The complete messages now readable (blocks for at least one read); None at EOF."""
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            return None
        self.buf += chunk
        out = []
        while len(self.buf) >= 4:
            (n,) = _LEN.unpack_from(self.buf)
            if len(self.buf) < 4 + n:
                break
            out.append(pickle.loads(self.buf[4 : 4 + n]))
            self.buf = self.buf[4 + n :]
        return out


# -- the app's side ------------------------------------------------------------------


class ForkServer:
    """The app's handle on its fork server (one per app process, see ``fork_server``)."""

    def __init__(self) -> None:
        ctl_r, self._ctl = os.pipe()
        rep_r, rep_w = os.pipe()
        life_r, self._life = os.pipe()
        env = dict(os.environ)
        # find alto_langgraph (and the app's modules) as the app does, installed or not
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "alto_langgraph.process._fork_main",
                str(ctl_r),
                str(rep_w),
                str(life_r),
            ],
            pass_fds=(ctl_r, rep_w, life_r),
            stdin=subprocess.DEVNULL,
            env=env,
        )
        for fd in (ctl_r, rep_w, life_r):
            os.close(fd)
        self.pid = os.getpid()  # the app process this server belongs to
        # every command goes through one queue to one writer thread: a deployment's
        # finalizer (run by the garbage collector, at any allocation of any thread,
        # say while that thread is sending a spawn) stops its processes with commands
        # too, so no lock may be taken on the way (a SimpleQueue's put is reentrant)
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name="alto-forkserver-ctl", daemon=True)
        self._writer.start()
        self._tokens = itertools.count()
        self._spawning: dict[int, tuple[concurrent.futures.Future[int], Callable[[int], None]]] = {}
        self._on_exit: dict[int, Callable[[int], None]] = {}
        #: once the server is gone: the pids it still ran (not reported as exited)
        self.orphans: set[int] = set()
        self._reader = threading.Thread(
            target=self._read, args=(rep_r,), name="alto-forkserver", daemon=True
        )
        self._reader.start()

    def alive(self) -> bool:
        return self.proc.poll() is None and self.pid == os.getpid()

    def spawn(
        self,
        target: str,
        kwargs: dict[str, Any],
        env: dict[str, str],
        on_exit: Callable[[int], None],
    ) -> int:
        """Fork a process running ``TARGETS[target](**kwargs)``; returns its pid.
        ``on_exit(exit_code)`` is called (on the reader thread) when it ends."""
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()
        token = next(self._tokens)
        self._spawning[token] = (fut, on_exit)
        self._outbox.put(("spawn", token, target, kwargs, env))
        return fut.result(timeout=60)

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        """Signal ``pid``, a process this server started (with its group, if it leads
        one). Once the server is gone, what it still ran is signalled from here."""
        if self.alive():  # it knows which pids are still its children: never a stranger
            self._command(("kill", pid, sig))
        elif pid in self.orphans:
            _signal(pid, sig)

    def remove_at_exit(self, path: str) -> None:
        """Remove directory ``path`` when the lifeline ends (the app exits or dies)."""
        self._command(("remove_at_exit", path))

    def _command(self, msg: tuple[Any, ...]) -> None:
        self._outbox.put(msg)

    def _write(self) -> None:
        """The writer thread: sends each command, in order, until ``close``."""
        while (msg := self._outbox.get()) is not None:
            try:
                _write_msg(self._ctl, msg)
            except Exception as exc:  # the server is gone, or a spawn does not pickle
                if msg[0] == "spawn":
                    fut, _ = self._spawning.pop(msg[1], (None, None))
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)

    def _read(self, fd: int) -> None:
        reader = _Reader(fd)
        try:
            while (msgs := reader.read()) is not None:
                for msg in msgs:
                    if msg[0] == "spawned":
                        _, token, pid = msg
                        fut, on_exit = self._spawning.pop(token)
                        self._on_exit[pid] = on_exit
                        fut.set_result(pid)
                    elif msg[0] == "exited":
                        _, pid, code = msg
                        handler = self._on_exit.pop(pid, None)
                        if handler is not None:
                            handler(code)
        finally:
            os.close(fd)
            for fut, _ in list(self._spawning.values()):
                if not fut.done():
                    fut.set_exception(RuntimeError("alto: the fork server exited"))
            # nobody reports exits any more: every process it started is unsupervised
            handlers, self._on_exit = self._on_exit, {}
            self.orphans = set(handlers)
            for handler in handlers.values():
                handler(None)

    def close(self) -> None:
        """End the lifeline: the server and everything it forked exit now."""
        self._outbox.put(None)  # the writer's last command: then its fd may close
        self._writer.join(5)
        for fd in (self._life, self._ctl):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_server: ForkServer | None = None
_server_lock = threading.Lock()


def fork_server() -> ForkServer:
    """This process's fork server, started on first use (again if it died, or after a fork)."""
    global _server
    with _server_lock:
        if _server is None or not _server.alive():
            _server = ForkServer()
        return _server


# -- the server's side ---------------------------------------------------------------


def _lifeline_watch(fd: int) -> None:
    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        if os.getpgid(0) == os.getpid():
            # a child leading a group of its own (a local Ray cluster) takes it along
            os.killpg(0, signal.SIGKILL)
        exit_now(0)

    threading.Thread(target=watch, name="alto-lifeline", daemon=True).start()


def exit_now(code: int = 0) -> None:
    """Leave at once, but with what the process printed written out."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def _name_process(name: str) -> None:
    """Show ``alto:<name>`` (e.g. ``alto:search#0``) in ps and top, not the fork
    server's command line (Linux; 15 characters)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, f"alto:{name}".encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _child(target: str, kwargs: dict[str, Any], env: dict[str, str], life_r: int) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    # The lifeline decides when alto's processes end: a SIGTERM sent to the app's whole
    # process group (timeout, systemd) must not end them while the app drains its
    # requests. STOP_SIGNAL stops one at once (a stage instance flushes output first).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(STOP_SIGNAL, signal.SIG_DFL)
    # node code's print() reaches a log or pipe line by line, as the app's own would
    if not sys.stdout.isatty():
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.environ.update(env)
    _name_process(kwargs.get("identity", target.encode()).decode())
    _lifeline_watch(life_r)
    module, func = TARGETS[target].split(":")
    code = 0
    try:
        getattr(sys.modules[module], func)(**kwargs)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        exit_now(code)


def _signal(pid: int, sig: int) -> None:
    """Signal a child; one that leads a process group of its own (a local Ray cluster,
    ``ray_cluster.serve_head``) with its whole group."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def main(ctl_r: int, rep_w: int, life_r: int) -> None:
    # Ctrl-C and a group SIGTERM are the app's to handle; the lifeline ends us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for module in {t.split(":")[0] for t in TARGETS.values()}:
        __import__(module)  # what every child needs, imported once, before any fork
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_r, False)
    os.set_blocking(sig_w, False)
    signal.set_wakeup_fd(sig_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    remove_at_exit: set[str] = set()
    reader = _Reader(ctl_r)

    def reap(block: bool) -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            _write_msg(rep_w, ("exited", pid, os.waitstatus_to_exitcode(status)))

    def shutdown() -> None:
        for path in remove_at_exit:
            shutil.rmtree(path, ignore_errors=True)
        for pid in children:
            _signal(pid, signal.SIGKILL)
        try:
            reap(block=True)
        except OSError:
            pass
        os._exit(0)

    while True:
        ready, _, _ = select.select([ctl_r, life_r, sig_r], [], [])
        if life_r in ready:
            shutdown()
        if sig_r in ready:
            try:
                os.read(sig_r, 4096)
            except BlockingIOError:
                pass
            reap(block=False)
        if ctl_r in ready:
            msgs = reader.read()
            if msgs is None:
                shutdown()
            for msg in msgs:
                if msg[0] == "spawn":
                    _, token, target, kwargs, env = msg
                    pid = os.fork()
                    if pid == 0:
                        for fd in (ctl_r, rep_w, sig_r, sig_w):
                            os.close(fd)
                        _child(target, kwargs, env, life_r)
                    children.add(pid)
                    _write_msg(rep_w, ("spawned", token, pid))
                elif msg[0] == "remove_at_exit":
                    remove_at_exit.add(msg[1])
                elif msg[0] == "kill":
                    _, pid, sig = msg
                    if pid in children:
                        _signal(pid, sig)
