import pytest

from flowtracker.engine.timestamps import TimestampError, format_ns, parse_timestamp

EPOCH_2021_03_10_16_40_17 = 1_615_394_417 * 1_000_000_000
RANGE = (
    "must be between 1677-09-21T00:12:43.145224192Z and 2262-04-11T23:47:16.854775807Z "
    "(nanoseconds stored in 64 bits)"
)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2021-03-10T16:40:17Z", EPOCH_2021_03_10_16_40_17),
        ("2021-03-10T16:40:17.332350921Z", EPOCH_2021_03_10_16_40_17 + 332_350_921),
        # Scrive's ten-digit samples: the tenth digit is truncated for ordering.
        ("2021-03-10T16:40:17.3323509219Z", EPOCH_2021_03_10_16_40_17 + 332_350_921),
        ("2021-03-10T16:40:17.5Z", EPOCH_2021_03_10_16_40_17 + 500_000_000),
        ("2021-03-10T17:40:17+01:00", EPOCH_2021_03_10_16_40_17),
        ("2021-03-10T11:10:17-05:30", EPOCH_2021_03_10_16_40_17),
        ("2021-03-10t16:40:17z", EPOCH_2021_03_10_16_40_17),
        ("1970-01-01T00:00:00Z", 0),
        # the range of 64-bit nanoseconds, where SQLite stores them
        ("1677-09-21T00:12:43.145224192Z", -(2**63)),
        ("2262-04-11T23:47:16.854775807Z", 2**63 - 1),
        ("2024-02-29T00:00:00Z", 1_709_164_800 * 1_000_000_000),
    ],
)
def test_parse_keeps_text_and_nanoseconds(text: str, ns: int) -> None:
    stamp = parse_timestamp(text)
    assert (stamp.text, stamp.ns) == (text, ns)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2021-03-15T13:43:67.4589254893Z", "second must be in 0..59 (got 67)"),
        ("2021-03-15T24:00:00Z", "hour must be in 0..23 (got 24)"),
        ("2021-03-15T23:60:00Z", "minute must be in 0..59 (got 60)"),
        ("2021-13-15T23:00:00Z", "month must be in 1..12 (got 13)"),
        ("2021-02-29T23:00:00Z", "day must be in 1..28 (got 29)"),
        ("2021-04-31T23:00:00Z", "day must be in 1..30 (got 31)"),
        ("0000-01-01T00:00:00Z", "year must be in 1..9999 (got 0)"),
        ("0001-01-01T00:00:00Z", RANGE),
        ("9999-12-31T23:59:59.999999999Z", RANGE),
        ("2262-04-11T23:47:16.854775808Z", RANGE),
        ("2021-03-15T13:43:07+24:00", "offset hour must be in 0..23 (got 24)"),
        ("2021-03-15T13:43:07", "not an RFC 3339 timestamp (expected YYYY-MM-DDTHH:MM:SS[.f]Z)"),
        ("2021-03-15", "not an RFC 3339 timestamp (expected YYYY-MM-DDTHH:MM:SS[.f]Z)"),
        ("2021-03-15T13:43:07.Z", "not an RFC 3339 timestamp (expected YYYY-MM-DDTHH:MM:SS[.f]Z)"),
        (
            "\uff12\uff1021-03-15T13:43:07Z",  # fullwidth digits are not ASCII digits
            "not an RFC 3339 timestamp (expected YYYY-MM-DDTHH:MM:SS[.f]Z)",
        ),
        ("", "not an RFC 3339 timestamp (expected YYYY-MM-DDTHH:MM:SS[.f]Z)"),
    ],
)
def test_parse_rejects_impossible_times_saying_why(text: str, message: str) -> None:
    with pytest.raises(TimestampError) as error:
        parse_timestamp(text)
    assert str(error.value) == message


def test_format_ns_is_utc_with_microseconds() -> None:
    assert format_ns(EPOCH_2021_03_10_16_40_17 + 332_350_921) == "2021-03-10T16:40:17.332350Z"
