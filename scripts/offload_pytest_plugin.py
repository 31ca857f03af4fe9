"""Offload's pytest plugin: runs exactly the tests of one batch, and traces discovery.

Offload starts each pytest batch as `pytest -p offload_pytest_plugin ... FILES`, with
this file's directory on PYTHONPATH and OFFLOAD_TESTS_FILE naming a file that lists the
batch's node IDs, one per line. pytest collects only FILES (the files of those IDs);
this plugin then keeps exactly the listed items, by a set lookup (the unlisted items of
a parametrized function are dropped as soon as they are made), so selecting a batch
costs time linear in the number of collected items, whatever the batch's size (node-ID
arguments would be matched against every item of their module, and a long argument
list may exceed the kernel's limits).

Listed IDs that pytest did not collect are named on stderr; they get no result, and
Offload reports them as not run. Without OFFLOAD_TESTS_FILE the plugin selects nothing.

In a batch the plugin also reports each test as it runs, so that Offload can show
progress per test and keep the result of a test that finished before the batch was
killed: a line when a test starts and one when it ends, on the stderr pytest had when
the plugin loaded (output capture does not see it), each line the marker
`##offload-event## ` and a JSON object:
`{"event": "started", "id": NODEID}` and
`{"event": "finished", "id": NODEID, "outcome": "passed"|"failed"|"error"|"skipped",
"time": SECONDS, "message": FIRST_LINE_OF_THE_REASON}`. The lines are written in
bunches, at most 0.1 s late (a failure at once): a line a test, each written alone,
woke Offload thousands of times on a suite of quick tests. A test that ends within the
bunch it started in gets no start line (its end says it ran): the start of the test
running when a bunch is written is what Offload needs (the test to blame when the
batch is killed, the tests shown running), and on a suite of quick tests half the
lines went. The outcome follows pytest's
JUnit report: a failing setup or teardown is an error, an expected failure a skip, an
unexpected pass under `strict` a failure. Offload strips these lines from the batch log.

When `offload run` collects tests with OFFLOAD_DISCOVERY_TRACE set, the plugin also
records what collection reads, so that Offload can tell later whether a cached test list
is still what `pytest --collect-only` would print: every file opened for reading and
every directory listed while pytest runs (the Python audit events `open`, `os.listdir`
and `os.scandir`), every directory on `sys.path` (a package installed there changes its
modification time; its listing may be cached from before this plugin loaded), and the
interpreter itself are written one absolute path a line to the file that variable names
when pytest ends. Without the variable nothing is traced.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest

TESTS_FILE_VARIABLE = "OFFLOAD_TESTS_FILE"
EVENT_MARKER = "##offload-event## "

# Started by the resident worker's client (see offload_pytest_worker.py): this process
# becomes the worker when it reaches collection.
_WORKER = None
if os.environ.get("OFFLOAD_RESIDENT_START"):
    import offload_pytest_worker as _WORKER

    _WORKER.arm()


def _wanted_ids(path: str) -> set[str]:
    with open(path, encoding="utf-8", newline="\n") as tests_file:
        return {line for line in tests_file.read().split("\n") if line}


def pytest_configure(config):  # type: ignore[no-untyped-def]
    global _EVENTS_FD
    path = os.environ.get(TESTS_FILE_VARIABLE)
    config._offload_wanted = _wanted_ids(path) if path else None
    # Under pytest-xdist the controller reports every test; its workers stay quiet.
    if hasattr(config, "workerinput") and _EVENTS_FD is not None:
        os.close(_EVENTS_FD)
        _EVENTS_FD = None
    if _EVENTS_FD is not None:
        threading.Thread(target=_flush_every_while, name="offload-events", daemon=True).start()


def start_batch(config):  # type: ignore[no-untyped-def]
    """In a child of the resident worker, which is now a batch's pytest (its stdio and
    environment are the batch's): what `pytest_configure` and the import did for the
    batch the worker started with, for this one."""
    _open_events()
    pytest_configure(config)


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):  # type: ignore[no-untyped-def]
    """In the armed process, collection is where it becomes the resident worker (see
    offload_pytest_worker.serve); its children return here as batches and collect."""
    if _WORKER is not None and _WORKER.armed():
        return _WORKER.serve(session)
    return None


# --- live events ----------------------------------------------------------------------

# The stderr of the batch, duplicated at import (before pytest captures file
# descriptor 2), so events reach Offload however the tests' output is captured.
_EVENTS_FD = None


def _open_events():
    """Duplicates the batch's stderr for the events, when in a batch. Called at import,
    and by the resident worker in each batch's child (where the module was imported
    before the batch's stderr was in place)."""
    global _EVENTS_FD
    if _EVENTS_FD is not None:
        os.close(_EVENTS_FD)
        _EVENTS_FD = None
    # The worker itself runs no test (and must not start the events' thread).
    if os.environ.get(TESTS_FILE_VARIABLE) and (_WORKER is None or not _WORKER.armed()):
        try:
            _EVENTS_FD = os.dup(2)
        except OSError:
            _EVENTS_FD = None


_open_events()
_phases = {}


# Event lines not written yet, the tests that started since the last write and have
# not finished (their start is written with the next bunch; a test that finishes
# before it needs no start line: its end says it ran), and the lock that guards them
# against the thread that writes them out every FLUSH_SECONDS.
_pending = []
_starting = {}
_pending_lock = threading.Lock()
FLUSH_SECONDS = 0.1


def _emit(event, at_once=False):
    if _EVENTS_FD is None:
        return
    line = EVENT_MARKER + json.dumps(event, ensure_ascii=True) + "\n"
    with _pending_lock:
        _pending.append(line)
        if at_once:
            _flush_locked()


def _flush_locked():
    for nodeid in _starting:
        _pending.append(EVENT_MARKER + json.dumps({"event": "started", "id": nodeid}) + "\n")
    _starting.clear()
    if not _pending or _EVENTS_FD is None:
        return
    data = "".join(_pending).encode("ascii")
    _pending.clear()
    try:
        while data:
            data = data[os.write(_EVENTS_FD, data):]
    except OSError:
        pass


def _flush():
    with _pending_lock:
        _flush_locked()


def _flush_every_while():
    while True:
        time.sleep(FLUSH_SECONDS)
        _flush()


def _reason(report):
    """The first line of why a phase did not pass, as pytest's short summary says it."""
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        text = str(longrepr[2])
    else:
        crash = getattr(longrepr, "reprcrash", None)
        text = getattr(crash, "message", None) or str(longrepr)
    if text.startswith("Skipped: "):
        text = text[len("Skipped: "):]
    lines = text.strip().splitlines()
    return lines[0][:500] if lines else ""


def _outcome(phases):
    """(outcome, message) of a test from its phases' reports, as pytest's JUnit report
    decides it."""
    for report in phases:
        if report.when != "call" and report.failed:
            return "error", _reason(report)
    for report in phases:
        if report.when == "call" and report.failed:
            return "failed", _reason(report)
    for report in phases:
        if report.skipped:
            reason = getattr(report, "wasxfail", None)
            if reason is not None:
                return "skipped", ("xfail: " + reason) if reason else "xfail"
            return "skipped", _reason(report)
    return "passed", ""


def pytest_runtest_logstart(nodeid, location):  # type: ignore[no-untyped-def]
    if _EVENTS_FD is None:
        return
    with _pending_lock:
        _starting[nodeid] = None


def pytest_runtest_logreport(report):  # type: ignore[no-untyped-def]
    if _EVENTS_FD is None:
        return
    _phases.setdefault(report.nodeid, []).append(report)


def pytest_runtest_logfinish(nodeid, location):  # type: ignore[no-untyped-def]
    phases = _phases.pop(nodeid, [])
    if _EVENTS_FD is None:
        return
    with _pending_lock:
        _starting.pop(nodeid, None)
    if not phases:
        return
    outcome, message = _outcome(phases)
    event = {
        "event": "finished",
        "id": nodeid,
        "outcome": outcome,
        "time": round(sum(getattr(r, "duration", 0.0) for r in phases), 6),
    }
    if message:
        event["message"] = message
    _emit(event, at_once=outcome in ("failed", "error"))


@pytest.hookimpl(hookwrapper=True)
def pytest_pycollect_makeitem(collector, name, obj):  # type: ignore[no-untyped-def]
    """Drops unlisted items of a parametrized function as soon as they are made, so
    the rest of collection never walks them (a batch may want a few of a module's
    tens of thousands)."""
    outcome = yield
    wanted = getattr(collector.config, "_offload_wanted", None)
    made = outcome.get_result()
    if wanted is not None and isinstance(made, list):
        outcome.force_result(
            [node for node in made if not isinstance(node, pytest.Item) or node.nodeid in wanted]
        )


# After other plugins' selection hooks (-k, -m, ...), so the batch has the last word.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):  # type: ignore[no-untyped-def]
    wanted = getattr(config, "_offload_wanted", None)
    if wanted is None:
        return
    selected = []
    deselected = []
    seen = set()
    for item in items:
        if item.nodeid in wanted:
            selected.append(item)
            seen.add(item.nodeid)
        else:
            deselected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = selected
    missing = [test_id for test_id in wanted if test_id not in seen]
    if missing:
        missing.sort()
        shown = "\n".join(f"  {test_id}" for test_id in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        sys.stderr.write(
            f"offload: {len(missing)} test ID(s) of the batch were not collected by pytest "
            f"and will be reported as not run:\n{shown}{more}\n"
        )


# --- discovery trace ------------------------------------------------------------------

_TRACE_FILE = os.environ.get("OFFLOAD_DISCOVERY_TRACE")
_traced = set()
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _record(path):
    if isinstance(path, int):
        return
    try:
        _traced.add(os.path.abspath(os.fsdecode(path)))
    except (TypeError, ValueError):
        pass


def _audit(event, args):
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            return
        if isinstance(flags, int) and flags & _WRITING:
            return
        _record(path)
    elif event in ("os.listdir", "os.scandir"):
        _record("." if not args or args[0] is None else args[0])


def _record_sys_path():
    for entry in sys.path:
        _record(entry or ".")


if _TRACE_FILE:
    _record(sys.executable)
    _record_sys_path()
    sys.addaudithook(_audit)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):  # type: ignore[no-untyped-def]
    _flush()
    if not _TRACE_FILE:
        return
    _record_sys_path()
    tmp = _TRACE_FILE + ".tmp"
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as out:
        for path in sorted(_traced):
            if "\n" not in path:
                out.write(path + "\n")
    os.replace(tmp, _TRACE_FILE)
