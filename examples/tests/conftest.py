"""Shared fixtures of the example suite.

Offload needs nothing from a conftest: it maps pytest's own JUnit names back to node
IDs. This one only provides fixtures the example tests use.
"""

import os
import pathlib
import tempfile

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a slow test (deselect with -m 'not slow')")


@pytest.fixture
def state_dir() -> pathlib.Path:
    """A directory that survives between attempts of a test within one machine.

    `OFFLOAD_EXAMPLE_STATE` overrides it, so a test run can use a private one.
    """
    base = os.environ.get("OFFLOAD_EXAMPLE_STATE") or os.path.join(tempfile.gettempdir(), "offload-example-state")
    path = pathlib.Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
