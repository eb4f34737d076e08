"""The list filter language: parsing, attribute resolution and type checks, without I/O."""

from __future__ import annotations

import pytest

from persistence.journal import Predicate
from runtime import visibility
from runtime.errors import ProtocolError

CUSTOM = {"Priority": "int", "Score": "double", "Vip": "bool", "Tags": "keyword_list", "Stage": "keyword", "Due": "datetime"}


def test_equality_predicates_joined_with_and() -> None:
    preds = visibility.parse('Stage = "gold" and Priority = 5 AND Vip = true', CUSTOM)
    assert preds == [
        Predicate(op="=", value="gold", attribute="Stage", type="keyword"),
        Predicate(op="=", value=5, attribute="Priority", type="int"),
        Predicate(op="=", value=True, attribute="Vip", type="bool"),
    ]


def test_system_attributes_map_to_columns_and_times_to_epoch_seconds() -> None:
    preds = visibility.parse("WorkflowType = 'orders' AND StartTime >= \"2026-01-01T00:00:00Z\"", {})
    assert preds[0] == Predicate(op="=", value="orders", column="workflow_type", type="keyword")
    assert preds[1].column == "started_at" and preds[1].op == ">=" and preds[1].value == 1767225600.0


def test_status_buckets_expand() -> None:
    (pred,) = visibility.parse('Status = "failed"', {})
    assert pred == Predicate(op="in", value=["failed", "cancelled", "terminated"], column="status")


def test_escaped_quotes_and_numbers() -> None:
    (s,) = visibility.parse(r'Stage = "say \"hi\""', CUSTOM)
    assert s.value == 'say "hi"'
    (d,) = visibility.parse("Score < 2.5e1", CUSTOM)
    assert d.value == 25.0 and d.type == "double"


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ('Nope = "x"', "Unknown search attribute 'Nope'"),
        ('Priority = "five"', "does not fit Priority, which is int"),
        ("Vip = 1", "does not fit Vip, which is bool"),
        ('Stage > "a"', "needs an int, double or datetime"),
        ('Due = "2026-01-01"', "needs a time zone"),
        ("Priority =", "ends early"),
        ("Priority = 1 OR Priority = 2", "joined with AND"),
        ('= "x"', "Expected an attribute name"),
        ("Priority 5", "Expected an operator"),
        ('Stage = "gold" #', "cannot be read"),
        ('BuildId = "x"', "cannot be filtered"),
        ('Status = "sleeping"', "Unknown status"),
        ("Priority = 9223372036854775808", "does not fit in 64 bits"),
        ("Priority >= -99999999999999999999999", "does not fit in 64 bits"),
        ("Score < 1e999", "numbers must be finite"),
        ("Score > -1e400", "numbers must be finite"),
        (" AND ".join(["Priority = 1"] * 51), "at most 50 conditions"),
    ],
)
def test_errors_say_what_to_fix(query: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as err:
        visibility.parse(query, CUSTOM)
    assert err.value.status == 422 and err.value.reason == "invalid_query"
    assert fragment in err.value.message


def test_the_edges_of_what_is_accepted() -> None:
    (big,) = visibility.parse("Priority = 9223372036854775807", CUSTOM)
    (small,) = visibility.parse("Priority = -9223372036854775808", CUSTOM)
    assert (big.value, small.value) == (2**63 - 1, -(2**63))
    assert len(visibility.parse(" AND ".join(["Priority = 1"] * 50), CUSTOM)) == 50


def test_free_text_is_not_a_filter() -> None:
    assert not visibility.is_filter("order-42")
    assert visibility.is_filter("Priority >= 2")
