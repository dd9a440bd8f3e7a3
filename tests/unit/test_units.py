import pytest

from registry_mirror.units import parse_duration, parse_size


@pytest.mark.parametrize("value,seconds", [
    (604800, 604800.0), (0, 0.0), (1.5, 1.5), ("30s", 30.0), ("15m", 900.0), ("12h", 43200.0), ("7d", 604800.0),
    ("90", 90.0), (" 2d ", 172800.0), ("0.5h", 1800.0),
])
def test_durations(value, seconds):
    assert parse_duration("mirror.max_age", value) == seconds


@pytest.mark.parametrize("value", ["7 days", "1w", "-5", -5, True, None, "", "d", [7]])
def test_bad_durations_name_the_key_and_the_forms(value):
    with pytest.raises(ValueError, match=r"mirror.max_age: .* is not a duration; write seconds .* 7d"):
        parse_duration("mirror.max_age", value)


@pytest.mark.parametrize("value,nbytes", [
    (1024, 1024), ("500GiB", 500 * 1024 ** 3), ("2TB", 2 * 10 ** 12), ("800MiB", 800 * 1024 ** 2),
    ("10 MB", 10 ** 7), ("1.5GiB", int(1.5 * 1024 ** 3)), ("4096", 4096), ("12b", 12), ("3kib", 3072),
])
def test_sizes(value, nbytes):
    assert parse_size("mirror.max_bytes", value) == nbytes


@pytest.mark.parametrize("value", ["500G", "500 gigs", "-1", -1, 1.5, True, None, "GiB", "5XB"])
def test_bad_sizes_name_the_key_and_the_forms(value):
    with pytest.raises(ValueError, match=r"mirror.max_bytes: .* is not a size; write bytes .* 500GiB"):
        parse_size("mirror.max_bytes", value)
