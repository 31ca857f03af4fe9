import time


def test_addition():
    time.sleep(0.5)
    assert 1 + 1 == 2


def test_subtraction():
    time.sleep(0.5)
    assert 5 - 3 == 2


def test_multiplication():
    assert 3 * 4 == 12


def test_division():
    assert 10 / 4 == 2.5


class TestPowers:
    def test_square(self):
        assert 7**2 == 49

    def test_cube(self):
        assert 2**3 == 8
