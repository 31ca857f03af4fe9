"""Offload's discovery trace: a pytest plugin that records what collection reads.

Offload loads it with `-p offload_discovery_trace` (its directory on PYTHONPATH) when it
collects tests for `offload run`, so that it can tell later whether a cached test list is
still what `pytest --collect-only` would print: every file opened for reading and every
directory listed while pytest runs (the Python audit events `open`, `os.listdir` and
`os.scandir`), every directory on `sys.path` (a package installed there changes its
modification time; its listing may be cached from before this plugin loaded), and the
interpreter itself, are written one absolute path a line to the
file named by OFFLOAD_DISCOVERY_TRACE when pytest ends. It changes nothing else, and does
nothing when that variable is unset.
"""

import os
import sys

_TRACE_FILE = os.environ.get("OFFLOAD_DISCOVERY_TRACE")
_seen = set()
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _record(path):
    if isinstance(path, int):
        return
    try:
        _seen.add(os.path.abspath(os.fsdecode(path)))
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


def pytest_unconfigure(config):
    if not _TRACE_FILE:
        return
    _record_sys_path()
    tmp = _TRACE_FILE + ".tmp"
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as out:
        for path in sorted(_seen):
            if "\n" not in path:
                out.write(path + "\n")
    os.replace(tmp, _TRACE_FILE)
