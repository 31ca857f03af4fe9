import time

import pytest


@pytest.mark.slow
def test_slow_computation():
    time.sleep(3)
    assert sum(range(1000)) == 499500


@pytest.mark.slow
def test_slow_io():
    time.sleep(2)
    assert True
