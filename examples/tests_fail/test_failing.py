"""Failing by design, kept apart from the passing suite: shows how failures are reported."""

import time


def test_fails_immediately():
    assert 1 + 1 == 3, "intentional failure"


def test_passes_slowly():
    time.sleep(1)
