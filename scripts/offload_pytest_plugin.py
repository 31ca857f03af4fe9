"""Offload's pytest plugin: runs exactly the tests of one batch.

Offload starts each pytest batch as `pytest -p offload_pytest_plugin ... FILES`, with
this file's directory on PYTHONPATH and OFFLOAD_TESTS_FILE naming a file that lists the
batch's node IDs, one per line. pytest collects only FILES (the files of those IDs);
this plugin then keeps exactly the listed items, by a set lookup (the unlisted items of
a parametrized function are dropped as soon as they are made), so selecting a batch
costs time linear in the number of collected items, whatever the batch's size (node-ID
arguments would be matched against every item of their module, and a long argument
list may exceed the kernel's limits).

Listed IDs that pytest did not collect are named on stderr; they get no result, and
Offload reports them as not run. Without OFFLOAD_TESTS_FILE the plugin does nothing.
"""

from __future__ import annotations

import os
import sys

import pytest

TESTS_FILE_VARIABLE = "OFFLOAD_TESTS_FILE"


def _wanted_ids(path: str) -> set[str]:
    with open(path, encoding="utf-8", newline="\n") as tests_file:
        return {line for line in tests_file.read().split("\n") if line}


def pytest_configure(config):  # type: ignore[no-untyped-def]
    path = os.environ.get(TESTS_FILE_VARIABLE)
    config._offload_wanted = _wanted_ids(path) if path else None


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
