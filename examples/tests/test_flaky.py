"""A test that is flaky by design: it fails on its first attempt and passes on the next.

The first attempt leaves a marker file behind and fails; the retry finds the marker,
removes it and passes. Run it in a group with `retry_count >= 1` and Offload reports it
as flaky (exit code 2); without retries it fails.
"""


def test_flaky(state_dir):
    marker = state_dir / "test_flaky.failed-once"
    if marker.exists():
        marker.unlink()
        return
    marker.write_text("the first attempt failed\n")
    raise AssertionError("failing on purpose: the retry will pass")
