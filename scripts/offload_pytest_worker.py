"""Offload's resident pytest worker: pay pytest's start-up once per sandbox, not per batch.

A pytest batch spends most of a second before its first test: starting Python,
importing pytest and its plugins, loading the conftests, importing the test modules.
With the resident worker, the first batch in a sandbox starts one pytest process that
does the start-up once and then forks a child per batch. The child is that batch's
pytest from collection on: it collects the batch's files (modules the worker imported
are not imported again), runs exactly the batch's tests in a session of its own
(session fixtures are set up in it), writes the batch's JUnit XML, with the batch's
working directory, environment, stdin, stdout and stderr, and its exit code is the
batch's. The modules imported before the fork are shared, as with pytest-xdist's
workers; each batch starts from the state they had after import, whatever earlier
batches did.

Offload runs each pytest batch as

    sh -c SNIPPET DIR SHARED KEY N T PREFIX... ARGS...

where DIR holds this file, the plugin and the client (offload_pytest_client.py, which
also holds the protocol), SHARED the worker's files, KEY names the worker (the same
command, `run_args` and paths give the same worker), PREFIX (N words) is the command
that starts pytest and ARGS the batch's pytest arguments, the last T of them the files
to collect. The snippet runs the client, with any `python3`: it connects to the
worker's socket `SHARED/resident-KEY.sock`, hands over its stdin, stdout and stderr,
working directory and environment, and waits for the child's exit code.
When no worker listens, the client starts one (under a lock, so concurrent batches start
one between them): the batch's own command `PREFIX ARGS...`, with OFFLOAD_RESIDENT_START
set (and the batch written to `SHARED/resident-KEY.start`), which makes the plugin `arm`
this module when pytest imports it. When that pytest reaches collection
(`pytest_collection`, see `serve`), it stays there as the worker:
configured as the batch's pytest is, with the interpreter, `sys.path`, environment and
imports that PREFIX set up (a virtualenv, `uv run`...). It imports the test modules of
its own batch (what the batches of a sandbox share, such as the package under test,
comes with them) before it forks that batch's child; batches that arrive together with
it are forked at once, so that they do not wait for it.

A warm-up (OFFLOAD_RESIDENT_WARM set; Offload sends one to the local sandboxes while it
discovers the tests, and one to each remote sandbox it creates meanwhile, so that the
worker's start-up and imports overlap discovery) is a client like a batch's, with the
discovery paths as its files: it starts the worker, which imports the test modules
under those paths (as far as it can tell which ones pytest's collection imports, see
`_test_files`) and answers it instead of forking it. A remote sandbox's warm-up client
does not wait for the answer (see the client's WARM_START): its exec ends as soon as
the worker has it.
Batches that come meanwhile (discovery imports without rewriting assertions, so it is
often done first) wait until it is done, and find everything imported: a first run's
batches each hold tests from all over the suite, so children forked earlier would
each import most modules again.

When the worker cannot be used, the batch runs as plain `PREFIX ARGS...` and the reason
is written to `SHARED/resident-KEY.off` (so later batches go straight to plain pytest)
and said once, as an Offload event line on stderr. The reasons: no `fork` on this
platform, threads running in the worker (forking a process with threads is not safe),
or PREFIX did not start pytest with this plugin (a wrapper that is not pytest, or a
pytest that failed before collection). A batch whose arguments differ from the worker's
in more than its JUnit file and its files, or that runs in another directory, runs as
plain pytest from its child.

The worker ends when its socket file goes (the sandbox was destroyed, or Offload's
temporary directory removed), when the process OFFLOAD_OWNER_PID names ends (the local
provider's Offload), on SIGTERM, and after IDLE_SECONDS without a batch; it kills the
process group of every child still running first. A child whose client goes away (the
batch timed out, was cancelled or interrupted) is killed with its process group at once.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import sys
import time

from offload_pytest_client import (
    START_VARIABLE,
    decode,
    paths_of,
    receive,
    request_of,
    run_plain,
    say_fallback,
    send,
    write_off,
)

OWNER_VARIABLE = "OFFLOAD_OWNER_PID"
PLUGIN = "offload_pytest_plugin"
IDLE_SECONDS = 600
POLL_SECONDS = 0.1
# How long the worker, once ready, waits for the batches that started with its own
# (they queue behind the start-up lock) before it imports its batch's modules.
GATHER_SECONDS = 0.005


# --- worker -------------------------------------------------------------------------


# What `arm` learnt, for `serve`.
_armed = {}


def arm():
    """Called by the plugin at import when OFFLOAD_RESIDENT_START is set, in the pytest
    process the client started: this process becomes the worker when it reaches
    collection (see `serve`)."""
    key, _, directory = os.environ.pop(START_VARIABLE).partition(":")
    _armed.update(key=key, dir=directory, worker_env=dict(os.environ))


def armed():
    """Whether this process is to become the worker (and has not yet)."""
    return bool(_armed) and not _armed.get("serving")


class _Batch(Exception):
    """Raised in a child the worker forked: unwinds the worker's loop to `serve`, which
    turns the child into its batch's pytest."""

    def __init__(self, request):
        super().__init__("batch")
        self.request = request


def serve(session):
    """The plugin's first `pytest_collection`, in the armed process. The worker never
    returns from it; a child returns once it is its batch's pytest, and collects its
    batch's files as pytest would have (the hook returns None). Serving here, inside
    the session, keeps the interpreter out of its shutdown, where threads and atexit
    handlers are refused (and tests use them)."""
    _armed["serving"] = True
    import threading

    config = session.config
    paths = paths_of(_armed["dir"], _armed["key"])
    try:
        # The batch that started the worker (see the client's `_start_worker`).
        with open(paths["start"], "rb") as start_file:
            start = request_of(decode(start_file.read()))
    except (OSError, ValueError, IndexError) as err:
        write_off(paths["off"], "the resident worker cannot read %s: %s" % (paths["start"], err))
        _leave()

    def unsafe():
        threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if not threads:
            return None
        return "the worker's pytest has threads running (%s), and forking it is not safe" % (
            ", ".join(sorted(threads))
        )

    reason = unsafe()
    if reason is not None:
        write_off(paths["off"], reason)
        _leave()
    worker = Worker(paths, config, start, _armed, unsafe)
    try:
        worker.run()
    except _Batch as batch:
        _become_batch(session, worker, batch.request)
        return None
    except SystemExit:
        # Told to end while it imported (see `Worker._stop`); its children are gone.
        _leave()
    except Exception as err:  # noqa: BLE001 - later batches must not wait for it
        write_off(paths["off"], "the resident worker failed: %r (see %s)" % (err, paths["log"]))
        raise
    _leave()


def _leave():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _split_args(args, targets):
    """(the arguments without the JUnit file and the targets, the JUnit file, the
    targets) of a batch's pytest arguments whose last `targets` are its files."""
    options = list(args[: len(args) - targets] if targets else args)
    junit = None
    for i, arg in enumerate(options):
        if arg.startswith("--junitxml=") or arg.startswith("--junit-xml="):
            junit = arg.split("=", 1)[1]
            options[i] = "--junitxml="
            break
    return options, junit, list(args[len(args) - targets :] if targets else [])


def _become_batch(session, worker, request):
    """In a child: makes this process the pytest of the batch `request` describes, from
    collection on (its directory, environment, arguments, JUnit file; its stdio is in
    place already)."""
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(worker._environment(request["env"]))
        config = session.config
        options, junit, targets = _split_args(request["args"], request["targets"])
        if (options, request["cwd"]) != (worker.options, worker.cwd) or not targets:
            # Not the batch the worker is configured for: its own pytest, from here.
            say_fallback(
                "a batch's pytest arguments or directory differ from the worker's, so it "
                "ran as plain pytest (worker: %s in %s; batch: %s in %s)"
                % (" ".join(worker.options), worker.cwd, " ".join(options), request["cwd"])
            )
            _exec_plain(request)
        sys.argv[1:] = list(request["args"])
        config.args = targets
        plugin = sys.modules.get("offload_pytest_plugin")
        if plugin is not None:
            plugin.start_batch(config)
        logxml = _plugin_of_type(config, "LogXML")
        if logxml is not None and junit is not None:
            logxml.logfile = os.path.normpath(os.path.abspath(junit))
            _restart_clock(logxml, "suite_start", "suite_start_time")
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        _restart_clock(terminal, "_session_start", "_sessionstarttime")
        import random

        # Every batch its own random sequence, as in a process of its own.
        random.seed()
        _end_without_teardown(session)
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 - the batch must run anyway
        _exec_plain(request, err)


def _end_without_teardown(session):
    """Makes the child end as a pytest process does, less the interpreter's teardown.
    At exit Python first waits for the threads that are not daemons
    (`threading._shutdown`), then runs the atexit handlers (the tests', and plugins'
    such as coverage's), then tears the interpreter down: it frees every object, one
    by one, also all that the child shares with the worker, which touches (and so
    copies) every page of it: tens of milliseconds a batch. The child does the first
    two, in that order, and then leaves with pytest's exit code, as a process that
    `multiprocessing` forked does."""
    import atexit
    import threading

    wait_for_threads = threading._shutdown

    def shutdown():
        wait_for_threads()
        atexit._run_exitfuncs()
        code = session.exitstatus
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream has nothing to flush
                pass
        os._exit(int(code) if isinstance(code, int) else 1)

    threading._shutdown = shutdown


def _exec_plain(request, err=None):
    """Runs the batch as plain pytest in place of this child (its stdio is the batch's
    already), after saying why when `err` is an error."""
    if err is not None:
        sys.stderr.write(
            "offload: the resident worker could not take this batch (%r): "
            "running it as plain pytest\n" % (err,)
        )
    try:
        os.chdir(request["cwd"])
    except OSError:
        pass
    run_plain(list(request["prefix"]) + list(request["args"]), request["env"])


def _plugin_of_type(config, name):
    for plugin in config.pluginmanager.get_plugins():
        if type(plugin).__name__ == name:
            return plugin
    return None


def _restart_clock(plugin, instant, seconds):
    """Restarts the session clock a plugin started in the worker (`instant`: a
    `timing.Instant` in recent pytest; `seconds`: a float in older ones)."""
    if plugin is None:
        return
    if hasattr(plugin, instant):
        setattr(plugin, instant, type(getattr(plugin, instant))())
    elif hasattr(plugin, seconds):
        setattr(plugin, seconds, time.time())


def _test_files(config, targets, matches):
    """The test modules pytest's collection of `targets` (paths as given to pytest)
    imports, as far as the worker can tell without collecting: a file as given; under a
    directory, the files whose names match `python_files`, in the directories pytest
    walks into (`norecursedirs`, `--ignore` and the conftests' `collect_ignore` heeded,
    through pytest's own `pytest_ignore_collect`). A directory with a conftest that
    pytest has not loaded yet is left to the children: that conftest may ignore files
    or change how they import, and loading it here would make its hooks apply to every
    batch."""
    try:
        from _pytest.pathlib import fnmatch_ex
    except ImportError:
        return
    norecurse = config.getini("norecursedirs")

    def ignored(path):
        try:
            return bool(config.hook.pytest_ignore_collect(collection_path=path, config=config))
        except Exception:  # noqa: BLE001 - a path the worker cannot judge is left out
            return True

    for target in targets:
        top = config.invocation_params.dir / target.split("::", 1)[0]
        if top.is_file():
            yield top
            continue
        for directory, subdirs, files in os.walk(top):
            here = type(top)(directory)
            conftest = here / "conftest.py"
            if here != top and (
                any(fnmatch_ex(p, here) for p in norecurse) or ignored(here)
            ) or (conftest.is_file() and not config.pluginmanager.has_plugin(str(conftest))):
                subdirs[:] = []
                continue
            subdirs.sort()
            for name in sorted(files):
                path = here / name
                if matches(path) and not ignored(path):
                    yield path


# Whether the worker is importing a test module, which may take any time: a signal to
# end then ends it at once (see `Worker._stop`).
_importing = [False]


def _warm(config, targets, between):
    """Imports the test modules of `targets` (see `_test_files`) as pytest's collection
    imports them (assertions rewritten), so that every child finds them imported,
    calling `between()` after each. A module that fails to import is left to the
    child's collection, which reports it as pytest does."""
    try:
        from _pytest.pathlib import fnmatch_ex, import_path
    except ImportError:
        return
    patterns = config.getini("python_files")
    mode = config.getoption("importmode", "prepend")
    root = config.rootpath

    def matches(path):
        return any(fnmatch_ex(p, path) for p in patterns)

    for path in _test_files(config, targets, matches):
        # pytest rewrites the assertions of a file it was given even when its name does
        # not match `python_files`; an import here would not.
        if not path.is_file() or not matches(path):
            continue
        _importing[0] = True
        try:
            try:
                import_path(
                    path,
                    mode=mode,
                    root=root,
                    consider_namespace_packages=config.getini("consider_namespace_packages"),
                )
            except (TypeError, ValueError):
                # pytest before 8.1 has no `consider_namespace_packages`.
                import_path(path, mode=mode, root=root)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # noqa: BLE001 - the child's collection reports it
            pass
        finally:
            _importing[0] = False
        between()


class Worker:
    def __init__(self, paths, config, start, armed_with, unsafe):
        self.paths = paths
        self.directory = armed_with["dir"]
        self.config = config
        # The environment of the client that started the worker.
        self.base_env = start["env"]
        self.worker_env = armed_with["worker_env"]
        # The batch's own arguments (pytest's also holds those of a command such as
        # `python -m pytest -p no:cacheprovider`).
        self.options, self.junit, self.files = _split_args(start["args"], start["targets"])
        self.cwd = os.getcwd()
        self.unsafe = unsafe
        self.socket_path = os.path.join(self.directory, paths["socket"])
        self.children = {}  # pid -> connection
        self.waiting = {}  # connection -> pid
        self.stopping = False
        self.in_child = False
        self.pending = []  # (connection, request, fds) accepted, not forked yet
        self.closing = False  # takes no more batches, ends with its running ones
        owner = os.environ.get(OWNER_VARIABLE)
        self.owner = int(owner) if owner and owner.isdigit() else None

    def run(self):
        """Serves until the worker is no longer wanted; raises `_Batch` in a child."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        # A child's end wakes the loop at once: SIGCHLD writes into this pipe.
        self.wakeup, wakeup_w = os.pipe()
        os.set_blocking(self.wakeup, False)
        os.set_blocking(wakeup_w, False)
        signal.set_wakeup_fd(wakeup_w)
        signal.signal(signal.SIGCHLD, lambda _signo, _frame: None)
        self._freeze()
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
        try:
            self._first_batches()
            last_busy = time.monotonic()
            while not self.stopping and self._wanted():
                if self.closing and not self.children:
                    break
                listening = [] if self.closing else [listener]
                ready = self._wait(listening + [self.wakeup] + list(self.waiting), POLL_SECONDS)
                for conn in ready:
                    if conn is self.wakeup:
                        self._drain_wakeup()
                    elif conn is listener:
                        request = self._accept()
                        if request is not None:
                            self._fork(*request)
                    else:
                        self._client_left(conn)
                self._reap()
                if self.children:
                    last_busy = time.monotonic()
                elif time.monotonic() - last_busy > IDLE_SECONDS:
                    break
        finally:
            if not self.in_child:
                self._shut_down()

    def _first_batches(self):
        """The batch that started the worker and those that came with it (they waited
        for its start-up): the others are forked at once; the worker then imports its
        own batch's modules (what later batches share comes with them) and forks it.
        When a warm-up started the worker, it imports every test module first, and
        answers the warm-up instead of forking it; the batches wait for that."""
        own, others = [], []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not own:
            wait = GATHER_SECONDS if others else deadline - time.monotonic()
            if not self._wait([self.listener], max(wait, 0)):
                if others:
                    break
                continue
            request = self._accept()
            if request is None:
                continue
            _, junit, _ = _split_args(request[1]["args"], request[1]["targets"])
            (own if junit == self.junit else others).append(request)
        # The batches that queued with the starting one, and may still be connecting.
        while self._wait([self.listener], GATHER_SECONDS):
            request = self._accept()
            if request is not None:
                others.append(request)
        self.pending = own + others
        # A warm-up has the worker import every test module, and the batches wait for
        # it (see the module's docs).
        warm_up = any(request.get("warm") for _conn, request, _fds in own)
        if not warm_up:
            for request in others:
                self._fork(*request)
        _warm(self.config, self.files, (lambda: None) if warm_up else self._fork_arrivals)
        reason = self.unsafe()
        if reason is not None:
            # Forking is no longer safe: the batch runs plainly, and so do later ones.
            write_off(self.paths["off"], reason)
            for conn, _request, fds in self.pending:
                _answer(conn, fds, ["fallback", reason.replace("\0", "\\0")])
            self.pending = []
            self._close()
            return
        self._freeze()
        for conn, request, fds in list(self.pending):
            if request.get("warm"):
                # A warm-up, not a batch: it only wanted the imports done.
                self.pending = [p for p in self.pending if p[0] is not conn]
                _answer(conn, fds, ["warmed"])
            else:
                self._fork(conn, request, fds)

    def _fork_arrivals(self):
        """Forks the batches that have arrived meanwhile, while it is safe: a batch
        that came late for the first ones waits for one module's import at most."""
        while self.unsafe() is None and self._wait([self.listener], 0):
            request = self._accept()
            if request is not None:
                self.pending.append(request)
                self._fork(*request)

    def _freeze(self):
        import gc

        # What the worker holds stays as it is in every child: keep the collector from
        # walking it there (and from touching, and so copying, every page of it). Not
        # collected first: a full collection of pytest's objects takes 10-20 ms that every
        # batch would wait for, to free a little garbage the children would not touch.
        if hasattr(gc, "freeze"):
            gc.freeze()

    def _stop(self, signo, _frame):
        self.stopping = True
        if _importing[0]:
            # Out of the import, through `run`, which ends the children first.
            raise SystemExit(128 + signo)

    def _wait(self, conns, timeout):
        try:
            ready, _, _ = select.select(conns, [], [], timeout)
        except (InterruptedError, OSError):
            return []
        return ready

    def _drain_wakeup(self):
        try:
            os.read(self.wakeup, 4096)
        except OSError:
            pass

    def _close(self):
        """Takes no more batches (later ones find no worker, and the `.off` file): the
        worker ends once its running children have."""
        self.closing = True
        self._unlink_socket()

    def _unlink_socket(self):
        try:
            if os.stat(self.socket_path).st_ino == self.identity:
                os.unlink(self.socket_path)
        except OSError:
            pass

    def _wanted(self):
        """Whether the worker is still wanted: its socket is still its own (unless it is
        closing), and the Offload process it serves (when said) still runs."""
        try:
            if not self.closing and os.stat(self.socket_path).st_ino != self.identity:
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
        """(connection, request, fds) of the next client, or None."""
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return None
        try:
            fields, fds = receive(conn)
            request = request_of(fields) if fields is not None else None
        except (OSError, ValueError, IndexError):
            conn.close()
            return None
        if request is None or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            conn.close()
            return None
        return conn, request, fds

    def _fork(self, conn, request, fds):
        self.pending = [p for p in self.pending if p[0] is not conn]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self.in_child = True
            try:
                self._child(conn, fds)
            except BaseException as err:  # noqa: BLE001 - the batch must run anyway
                _exec_plain(request, err)
            raise _Batch(request)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        self.waiting[conn] = pid
        try:
            send(conn, ["started", str(pid)])
        except OSError:
            self._client_left(conn)

    def _child(self, conn, fds):
        """In a fresh child: lets go of the worker's files and signals, and takes the
        batch's stdio in place of the worker's, output capture included."""
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        # pytest's own handler, as in a process pytest started itself.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.close(self.wakeup)
        self.listener.close()
        conn.close()
        for other in self.waiting:
            other.close()
        for other, _request, other_fds in self.pending:
            other.close()
            for fd in other_fds:
                os.close(fd)
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if capture is not None:
            # Capturing saved the worker's descriptors: start it again on the batch's.
            capture.stop_global_capturing()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        if capture is not None:
            capture.start_global_capturing()
            capture.suspend_global_capture()
        import faulthandler

        if faulthandler.is_enabled():
            faulthandler.enable(file=sys.stderr)

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
                    send(conn, ["exit", str(code)])
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
        self._unlink_socket()
        # Last: the local provider waits for this file to go.
        try:
            os.unlink(self.paths["pid"])
        except OSError:
            pass


def _answer(conn, fds, message):
    """Answers a client whose batch the worker does not fork (`message`: fields), and
    lets it go."""
    for fd in fds:
        os.close(fd)
    try:
        send(conn, message)
    except OSError:
        pass
    conn.close()


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError as err:
        if err.errno not in (errno.ESRCH, errno.EPERM):
            raise

