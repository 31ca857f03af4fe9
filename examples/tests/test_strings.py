import pytest


def test_concatenation():
    assert "off" + "load" == "offload"


def test_upper():
    assert "offload".upper() == "OFFLOAD"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hello world", ["hello", "world"]),
        ("a  b", ["a", "b"]),
        ("ünï cödé", ["ünï", "cödé"]),
    ],
)
def test_split(text, expected):
    assert text.split() == expected


@pytest.mark.skip(reason="shows how skipped tests are reported")
def test_not_ready():
    raise AssertionError("never runs")
