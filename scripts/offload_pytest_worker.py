"""Offload's resident pytest worker: pay pytest's start-up once per sandbox, not per batch.

A pytest batch spends most of a second before its first test: starting Python,
importing pytest, its plugins, the conftests and the test modules. With the resident
worker, the first batch in a sandbox starts one process that does all of that once,
then forks a child per batch. The child runs the batch as a fresh `pytest.main` (a new
session: session fixtures are set up in it), with the batch's own arguments, working
directory, environment, stdin, stdout and stderr, and its exit code is the batch's. The
modules imported at start-up are shared, as with pytest-xdist's workers; each batch
starts from the state they had after import, whatever earlier batches did.

Offload runs each pytest batch as

    sh -c SNIPPET DIR KEY N PREFIX... ARGS...

where DIR holds this file and the plugin, KEY names the worker (the same command,
`run_args` and paths give the same worker), PREFIX (N words) is the command that starts
pytest and ARGS the batch's pytest arguments. The snippet runs this file as a client,
with any `python3`: the client connects to the worker's socket `DIR/resident-KEY.sock`,
hands over its stdin, stdout and stderr and its environment, and waits for the child's
exit code. When no worker listens, the client starts one (under a lock, so concurrent
batches start one between them): it runs `PREFIX -p offload_pytest_plugin --collect-only
...` (the configured paths) with OFFLOAD_RESIDENT_START set, which makes the plugin,
when pytest imports it, `arm` this module: once that collection is over, the process stays
(it serves from the plugin's last `pytest_unconfigure`), with the interpreter, `sys.path`,
environment and imports that PREFIX set up (a virtualenv, `uv run`...), checks that
forking is safe, and listens.

When the worker cannot be used, the batch runs as plain `PREFIX ARGS...` and the reason
is written to `DIR/resident-KEY.off` (so later batches go straight to plain pytest) and
said once, as an Offload event line on stderr. The reasons: no `fork` on this platform,
the collection failed (a plugin or conftest that cannot load), threads left running
after collection (forking a process with threads is not safe), or PREFIX did not start
pytest with this plugin (a wrapper that is not pytest).

The worker ends when its socket file goes (the sandbox was destroyed, or Offload's
temporary directory removed), when the process OFFLOAD_OWNER_PID names ends (the local provider's Offload), on
SIGTERM, and after IDLE_SECONDS without a batch; it kills the process group of every
child still running first. A child whose client goes away (the batch timed out, was
cancelled or interrupted) is killed with its process group at once.
"""

from __future__ import annotations

import array
import errno
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

START_VARIABLE = "OFFLOAD_RESIDENT_START"
OWNER_VARIABLE = "OFFLOAD_OWNER_PID"
WARMUP_VARIABLE = "OFFLOAD_RESIDENT_WARMUP"
PLUGIN = "offload_pytest_plugin"
EVENT_MARKER = "##offload-event## "
IDLE_SECONDS = 600
POLL_SECONDS = 0.1


# --- shared -------------------------------------------------------------------------


def _paths(directory, key):
    base = os.path.join(directory, "resident-" + key)
    return {
        "socket": "resident-" + key + ".sock",
        "off": base + ".off",
        "lock": base + ".lock",
        "log": base + ".log",
        "pid": base + ".pid",
        "env": base + ".env",
        "python": base + ".python",
    }


def _connect(directory, name):
    """A connection to the worker listening on `directory/name`, or None. The path is
    given relative to `directory`: a socket path may not exceed about 100 bytes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(directory)
        sock.connect(name)
        return sock
    except OSError:
        sock.close()
        return None
    finally:
        os.fchdir(here)
        os.close(here)


def _send_message(sock, payload, fds=()):
    data = json.dumps(payload).encode("utf-8")
    data = struct.pack("!I", len(data)) + data
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    sent = sock.sendmsg([data], ancillary)
    sock.sendall(data[sent:])


def _receive_message(sock):
    """(payload, fds) of one message, or (None, []) when the peer closed first. Reads
    exactly one message: the next one may already be on its way."""
    fds = array.array("i")
    data = b""
    size = None
    while size is None or len(data) < size + 4:
        wanted = (4 if size is None else size + 4) - len(data)
        chunk, ancillary, _flags, _addr = sock.recvmsg(
            min(wanted, 1 << 20), socket.CMSG_LEN(8 * fds.itemsize)
        )
        for level, kind, cdata in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None, []
        data += chunk
        if size is None and len(data) >= 4:
            size = struct.unpack("!I", data[:4])[0]
    return json.loads(data[4 : size + 4].decode("utf-8")), list(fds)


def _say_fallback(reason):
    event = {"event": "resident-fallback", "id": "", "message": reason}
    sys.stderr.write(EVENT_MARKER + json.dumps(event) + "\n")
    sys.stderr.flush()


def _write_off(path, reason):
    """Records why the worker is not used; True when this call recorded it first."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(reason + "\n")
    return True


# --- client -------------------------------------------------------------------------


def client(argv):
    directory, key, count = argv[0], argv[1], int(argv[2])
    prefix, args = argv[3 : 3 + count], argv[3 + count :]
    paths = _paths(directory, key)
    plain = prefix + args

    def fall_back(reason):
        """Runs the batch as plain pytest; says `reason` when it is news."""
        if reason and _write_off(paths["off"], reason):
            _say_fallback(reason)
        _exec(plain)

    if os.path.exists(paths["off"]):
        _exec(plain)
    if not hasattr(os, "fork") or not hasattr(socket, "AF_UNIX"):
        fall_back("this platform has no fork() or Unix sockets")
    sock = _connect(directory, paths["socket"])
    if sock is None:
        sock = _start_worker(directory, key, paths, prefix, fall_back)
    code = _run_batch(sock, args)
    if code is None:
        # The worker went away before it took the batch (it was ending): run it plainly.
        _exec(plain)
    sys.exit(code)


def _exec(argv):
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as err:
        sys.stderr.write("offload: cannot run %s: %s\n" % (argv[0], err))
        sys.exit(127)


def _start_worker(directory, key, paths, prefix, fall_back):
    """Starts the worker (unless a concurrent batch did meanwhile); its connection."""
    import fcntl

    lock = os.open(paths["lock"], os.O_RDWR | os.O_CREAT, 0o644)
    # A batch that finds another one starting the worker waits for it: one start-up
    # on the machine, not one per batch.
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        sock = _connect(directory, paths["socket"])
        if sock is not None:
            return sock
        if os.path.exists(paths["off"]):
            fall_back(None)
        try:
            os.unlink(os.path.join(directory, paths["socket"]))
        except OSError:
            pass
        with open(paths["env"], "w", encoding="utf-8") as out:
            json.dump(dict(os.environ), out)
        env = dict(os.environ)
        env[START_VARIABLE] = json.dumps({"dir": directory, "key": key})
        warmup = json.loads(os.environ.get(WARMUP_VARIABLE, "[]"))
        with open(paths["log"], "ab") as log:
            try:
                worker = subprocess.Popen(
                    prefix + ["-p", PLUGIN] + warmup,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as err:
                fall_back("cannot start `%s`: %s" % (" ".join(prefix), err))
        while True:
            sock = _connect(directory, paths["socket"])
            if sock is not None:
                return sock
            code = worker.poll()
            if code is not None:
                if os.path.exists(paths["off"]):
                    with open(paths["off"], encoding="utf-8", errors="replace") as off:
                        reason = off.read().strip()
                    _say_fallback(reason)
                    fall_back(None)
                fall_back(
                    "`%s` ended (exit code %s) before the worker was ready, so it is not "
                    "pytest with Offload's plugin: %s (see %s)"
                    % (" ".join(prefix), code, _last_line(paths["log"]), paths["log"])
                )
            time.sleep(0.01)
    finally:
        os.close(lock)


def _last_line(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"


def _run_batch(sock, args):
    """Hands the batch to the worker; the child's exit code, or None when the worker
    closed the connection before it started the batch."""
    try:
        _send_message(
            sock,
            {"args": args, "env": dict(os.environ), "cwd": os.getcwd()},
            fds=(0, 1, 2),
        )
        started, _ = _receive_message(sock)
        if started is None:
            return None
        done, _ = _receive_message(sock)
    except OSError:
        return None
    if done is None:
        sys.stderr.write("offload: the resident pytest worker ended while it ran this batch\n")
        return 1
    return int(done["exit"])


# --- worker -------------------------------------------------------------------------


# What `arm` learnt, for the serving that starts when pytest is done.
_armed = {}


def arm():
    """Called by the plugin at import when OFFLOAD_RESIDENT_START is set, in the pytest
    process the client started: this process becomes the worker once its collection
    (`--collect-only` over the first batch's files) is over, from the plugin's last
    `pytest_unconfigure` (see `serve`). It keeps the interpreter, `sys.path`,
    environment and imports of the user's command; nothing is started twice."""
    start = json.loads(os.environ.pop(START_VARIABLE))
    warmup = json.loads(os.environ.get(WARMUP_VARIABLE, "[]"))
    # The batch's arguments come after pytest's own ones of the command (`-p ...`).
    start["own_args"] = sys.argv[1 : len(sys.argv) - len(warmup) - 2]
    start["worker_env"] = dict(os.environ)
    # The collection is the whole suite's, not the first batch's.
    os.environ.pop("OFFLOAD_TESTS_FILE", None)
    _armed.update(start)
    _armed["status"] = None


def session_finished(exitstatus):
    """The plugin's `pytest_sessionfinish`: the collection's outcome, in the armed
    process."""
    if _armed and _armed["status"] is None:
        _armed["status"] = int(exitstatus)


def serve():
    """Called by the plugin's `pytest_unconfigure` (after every other plugin's): in the
    armed process, never returns. Serving there, not at exit, keeps the interpreter
    out of its shutdown, where threads and atexit handlers are refused (and tests
    use them). The children's `pytest.main` calls nest in this one, as pytester's do."""
    if not _armed or _armed.get("serving"):
        return
    _armed["serving"] = True
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    directory, key = _armed["dir"], _armed["key"]
    paths = _paths(directory, key)
    try:
        with open(paths["env"], encoding="utf-8") as env_file:
            base_env = json.load(env_file)
    except (OSError, ValueError):
        base_env = {}
    status = _armed["status"]
    reason = None
    if status not in (0, 2, 5):
        reason = "collecting the tests in the worker failed (pytest exit code %s, see %s)" % (
            status,
            paths["log"],
        )
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if reason is None and threads:
        reason = (
            "the collected session leaves threads running (%s), and forking it is not safe"
            % ", ".join(sorted(threads))
        )
    if reason is not None:
        _write_off(paths["off"], reason)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    import gc

    # What the collection made stays as it is in every child: keep the collector from
    # walking it there (and from touching, and so copying, every page of it).
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()
    try:
        Worker(directory, paths, _armed["own_args"], base_env, _armed["worker_env"]).run()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class Worker:
    def __init__(self, directory, paths, own_args, base_env, worker_env):
        self.directory = directory
        self.paths = paths
        self.own_args = own_args
        self.base_env = base_env
        self.worker_env = worker_env
        self.socket_path = os.path.join(directory, paths["socket"])
        self.children = {}  # pid -> connection
        self.waiting = {}  # connection -> pid
        self.stopping = False
        owner = os.environ.get(OWNER_VARIABLE)
        self.owner = int(owner) if owner and owner.isdigit() else None

    def run(self):
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        # A child's end wakes the loop at once: SIGCHLD writes into this pipe.
        self.wakeup, wakeup_w = os.pipe()
        os.set_blocking(self.wakeup, False)
        os.set_blocking(wakeup_w, False)
        signal.set_wakeup_fd(wakeup_w)
        signal.signal(signal.SIGCHLD, lambda _signo, _frame: None)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        here = os.getcwd()
        os.chdir(self.directory)
        try:
            listener.bind(self.paths["socket"])
        finally:
            os.chdir(here)
        listener.listen(64)
        self.identity = os.stat(self.socket_path).st_ino
        with open(self.paths["pid"], "w", encoding="utf-8") as out:
            out.write("%d\n" % os.getpid())
        # Later clients start faster with this interpreter than with a `python3` shim.
        with open(self.paths["python"], "w", encoding="utf-8") as out:
            out.write(sys.executable + "\n")
        self.listener = listener
        last_busy = time.monotonic()
        try:
            while not self.stopping and self._wanted():
                ready = self._wait([listener, self.wakeup] + list(self.waiting))
                for conn in ready:
                    if conn is self.wakeup:
                        try:
                            os.read(self.wakeup, 4096)
                        except OSError:
                            pass
                    elif conn is listener:
                        self._accept()
                    else:
                        self._client_left(conn)
                self._reap()
                if self.children:
                    last_busy = time.monotonic()
                elif time.monotonic() - last_busy > IDLE_SECONDS:
                    break
        finally:
            self._shut_down()

    def _stop(self, _signo, _frame):
        self.stopping = True

    def _wait(self, conns):
        try:
            ready, _, _ = select.select(conns, [], [], POLL_SECONDS)
        except (InterruptedError, OSError):
            return []
        return ready

    def _wanted(self):
        """Whether the worker is still wanted: its socket is still its own, and the
        Offload process it serves (when said) still runs."""
        try:
            if os.stat(self.socket_path).st_ino != self.identity:
                return False
        except OSError:
            return False
        if self.owner is not None:
            try:
                os.kill(self.owner, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
        return True

    def _accept(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            request, fds = _receive_message(conn)
        except (OSError, ValueError):
            conn.close()
            return
        if request is None or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._child(conn, request, fds)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        self.waiting[conn] = pid
        try:
            _send_message(conn, {"started": pid})
        except OSError:
            self._client_left(conn)

    def _child(self, conn, request, fds):
        code = 70
        try:
            os.setpgid(0, 0)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            # pytest's own handler, as in a process pytest started itself.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.close(self.wakeup)
            self.listener.close()
            conn.close()
            for other in self.waiting:
                other.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(self._environment(request["env"]))
            sys.argv = [sys.argv[0]] + list(request["args"])
            import offload_pytest_plugin

            offload_pytest_plugin._open_events()
            import pytest

            code = int(pytest.main(self.own_args + list(request["args"])))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException as err:  # noqa: BLE001 - the child must always exit
            try:
                sys.stderr.write("offload: the resident pytest worker failed: %r\n" % (err,))
            except Exception:  # noqa: BLE001
                pass
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def _environment(self, env):
        """The batch client's environment `env` with what PREFIX changed in the
        environment of the client that started the worker (a virtualenv's PATH...)."""
        result = dict(env)
        for name, value in self.worker_env.items():
            if self.base_env.get(name) != value:
                result[name] = value
        for name in self.base_env:
            if name not in self.worker_env:
                result.pop(name, None)
        return result

    def _client_left(self, conn):
        pid = self.waiting.pop(conn, None)
        if pid is not None and pid in self.children:
            _kill_group(pid)
        conn.close()

    def _reap(self):
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            if os.WIFEXITED(status):
                code = os.WEXITSTATUS(status)
            else:
                code = 128 + os.WTERMSIG(status)
            if self.waiting.pop(conn, None) is not None:
                try:
                    _send_message(conn, {"exit": code})
                except OSError:
                    pass
            conn.close()
            # What the batch started in its process group goes with it.
            _kill_group(pid)

    def _shut_down(self):
        for pid in list(self.children):
            _kill_group(pid)
        deadline = time.monotonic() + 5
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.02)
        try:
            if os.stat(self.socket_path).st_ino == self.identity:
                os.unlink(self.socket_path)
        except OSError:
            pass
        # Last: the local provider waits for this file to go.
        try:
            os.unlink(self.paths["pid"])
        except OSError:
            pass


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError as err:
        if err.errno not in (errno.ESRCH, errno.EPERM):
            raise


if __name__ == "__main__":
    client(sys.argv[1:])
