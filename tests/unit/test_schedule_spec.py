"""Schedule arithmetic without a clock: cron in a time zone, intervals, backfill windows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from actors.schedule_spec import (
    SpecError,
    duration_seconds,
    next_fire,
    occurrences,
    parse_spec,
    previous_fire,
)
from runtime.schedules import fire_workflow_id


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_cron_is_evaluated_in_the_schedules_time_zone() -> None:
    paris = parse_spec({"cron_expressions": ["0 2 * * *"], "timezone": "Europe/Paris"})
    assert next_fire(paris, ts(2026, 1, 1)) == ts(2026, 1, 1, 1)  # 02:00 CET
    assert next_fire(paris, ts(2026, 6, 30, 12)) == ts(2026, 7, 1, 0)  # 02:00 CEST
    assert next_fire(parse_spec({"cron_expressions": ["@hourly"]}), ts(2026, 1, 1, 5, 30)) == ts(2026, 1, 1, 6)


def test_intervals_count_from_the_epoch_plus_offset_and_the_earliest_rule_wins() -> None:
    spec = parse_spec({"intervals": [{"every": "PT30M", "offset": "PT5M"}], "cron_expressions": ["0 0 * * *"]})
    assert next_fire(spec, ts(2026, 1, 1)) == ts(2026, 1, 1, 0, 5)
    assert next_fire(spec, ts(2026, 1, 1, 0, 5)) == ts(2026, 1, 1, 0, 35)  # strictly after
    assert duration_seconds("P1M") == 30 * 86400 and duration_seconds("P1Y") == 365 * 86400
    assert duration_seconds("PT1.5S") == 1.5 and duration_seconds("P") is None and duration_seconds("1h") is None


def test_an_interval_schedule_fires_on_its_own_through_a_long_wait() -> None:
    """The injected-clock check: stepping a fake 'now' through a day of a 6-hour interval."""
    spec = parse_spec({"intervals": [{"every": "PT6H"}]})
    now, fired = ts(2026, 3, 1), []
    nxt = next_fire(spec, now)
    while nxt is not None and nxt < ts(2026, 3, 2):
        now = nxt  # the ticker sleeps until the fire time
        fired.append(datetime.fromtimestamp(now, UTC).hour)
        nxt = next_fire(spec, now)
    assert fired == [6, 12, 18]


def test_backfill_window_is_half_open_and_ordered() -> None:
    spec = parse_spec({"cron_expressions": ["0 * * * *"]})
    got = occurrences(spec, ts(2026, 4, 20), ts(2026, 4, 20, 3))
    assert got == [ts(2026, 4, 20, 0), ts(2026, 4, 20, 1), ts(2026, 4, 20, 2)]


@pytest.mark.parametrize(
    ("spec", "reason", "field"),
    [
        ({"cron_expressions": ["61 * * * *"]}, "invalid_cron_expression", "spec.cron_expressions"),
        ({"cron_expressions": ["* * *"]}, "invalid_cron_expression", "spec.cron_expressions"),
        ({"cron_expressions": ["@sometimes"]}, "invalid_cron_expression", "spec.cron_expressions"),
        ({"cron_expressions": ["@daily"], "timezone": "Mars/Olympus"}, "invalid_timezone", "spec.timezone"),
        ({}, "invalid_schedule_spec", "spec"),
        ({"intervals": [{"every": "soon"}]}, "invalid_schedule_spec", "spec.intervals.0.every"),
        ({"intervals": [{"every": "PT1H", "offset": "x"}]}, "invalid_schedule_spec", "spec.intervals.0.offset"),
        ("0 * * * *", "invalid_schedule_spec", "spec"),
    ],
)
def test_bad_specs_name_the_field(spec: object, reason: str, field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert (err.value.reason, err.value.field) == (reason, field)


def test_fire_ids_are_fixed_by_schedule_and_occurrence() -> None:
    a = fire_workflow_id("default", "nightly", ts(2026, 1, 1))
    assert a == fire_workflow_id("default", "nightly", ts(2026, 1, 1)) and len(a) == 26
    assert a != fire_workflow_id("default", "nightly", ts(2026, 1, 2))
    assert a != fire_workflow_id("default", "nightly", ts(2026, 1, 1), 1)
    assert a[:10] < fire_workflow_id("default", "nightly", ts(2026, 1, 2))[:10]  # time-ordered like a ULID


def test_previous_fire_is_the_catch_up_occurrence_after_downtime() -> None:
    spec = parse_spec({"intervals": [{"every": "PT1S"}], "cron_expressions": ["0 * * * *"]})
    assert previous_fire(spec, ts(2026, 1, 1, 5, 0, 0) + 0.4) == ts(2026, 1, 1, 5)
    assert previous_fire(parse_spec({"cron_expressions": ["0 * * * *"]}), ts(2026, 1, 1, 5, 59)) == ts(2026, 1, 1, 5)
    day = parse_spec({"intervals": [{"every": "PT1S"}]})
    assert len(occurrences(day, ts(2026, 1, 1), ts(2026, 1, 2))) == 10_000  # a day of seconds, counted up to the cap


def test_start_and_end_bounds_limit_the_occurrences() -> None:
    spec = parse_spec({"cron_expressions": ["0 * * * *"], "start_at": "2026-01-01T10:30:00Z", "end_at": "2026-01-01T12:00:00Z"})
    assert next_fire(spec, ts(2026, 1, 1)) == ts(2026, 1, 1, 11)
    assert next_fire(spec, ts(2026, 1, 1, 11)) == ts(2026, 1, 1, 12)  # the end is inclusive
    assert next_fire(spec, ts(2026, 1, 1, 12)) is None
    assert occurrences(spec, ts(2026, 1, 1), ts(2026, 1, 2)) == [ts(2026, 1, 1, 11), ts(2026, 1, 1, 12)]
    assert previous_fire(spec, ts(2026, 1, 1, 10, 45)) is None and previous_fire(spec, ts(2026, 1, 3)) == ts(2026, 1, 1, 12)
    with pytest.raises(SpecError) as err:
        parse_spec({"cron_expressions": ["@daily"], "start_at": "tomorrow"})
    assert err.value.field == "spec.start_at"
    with pytest.raises(SpecError):
        parse_spec({"cron_expressions": ["@daily"], "start_at": "2026-01-02T00:00:00Z", "end_at": "2026-01-01T00:00:00Z"})
