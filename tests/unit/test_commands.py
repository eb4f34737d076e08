"""validate_commands: accepted shapes and the (status, reason, errors key) of every rejection.

Worker-plane spec 5.6 and 5.6.1: a completion is validated as a whole; field errors are
422 ``validation_failed`` keyed by the offending path, ordering errors are 409
``invalid_commands``, a batch over 1000 commands is 422 ``structural_limit_exceeded``.
"""

from __future__ import annotations

from typing import Any

import pytest

from actors.commands import MAX_COMMANDS, CommandError, validate_commands

BLOB = "wwHioz3/VYAiNwwCCgZBZGEA"
ENV = {"codec": "avro", "blob": BLOB}


def rejected(commands: Any) -> CommandError:
    with pytest.raises(CommandError) as info:
        validate_commands(commands)
    return info.value


def assert_field_error(commands: Any, key: str) -> CommandError:
    err = rejected(commands)
    assert (err.status, err.reason) == (422, "validation_failed")
    assert list(err.errors) == [key]
    assert err.errors[key] and all(isinstance(m, str) and m for m in err.errors[key])
    return err


def activity(**extra: Any) -> dict[str, Any]:
    return {"type": "schedule_activity", "activity_type": "orders.charge", **extra}


# --- accepted shapes ------------------------------------------------------------------

MINIMAL = [
    activity(),
    {"type": "start_timer", "delay_seconds": 0},
    {"type": "start_child_workflow", "workflow_type": "orders.ship"},
    {"type": "record_side_effect", "result": BLOB},
    {"type": "record_version_marker", "change_id": "c1", "version": 1, "min_supported": -1, "max_supported": 1},
    {"type": "upsert_search_attributes", "attributes": {}},
    {"type": "open_condition_wait"},
    {"type": "complete_workflow"},
    {"type": "fail_workflow", "message": "boom"},
    {"type": "continue_as_new"},
]


@pytest.mark.parametrize("command", MINIMAL, ids=[c["type"] for c in MINIMAL])
def test_each_command_type_accepted_in_minimal_shape(command: dict[str, Any]) -> None:
    out = validate_commands([command])
    assert len(out) == 1
    assert out[0]["type"] == command["type"]


def test_schedule_activity_defaults_retry_policy_to_one_attempt() -> None:
    [cmd] = validate_commands([activity()])
    assert cmd["queue"] is None
    assert cmd["arguments"] is None
    assert cmd["par"] is None
    assert cmd["policy"] == {
        "max_attempts": 1,
        "backoff_seconds": [],
        "non_retryable_error_types": [],
        "start_to_close_timeout": None,
        "schedule_to_start_timeout": None,
        "schedule_to_close_timeout": None,
        "heartbeat_timeout": None,
    }


def test_schedule_activity_full_shape_is_normalised() -> None:
    [cmd] = validate_commands(
        [
            activity(
                queue="orders",
                arguments=ENV,
                retry_policy={"max_attempts": 3, "backoff_seconds": [1, 2], "non_retryable_error_types": ["CardDeclined"]},
                start_to_close_timeout=30,
                schedule_to_start_timeout=60,
                schedule_to_close_timeout=300,
                heartbeat_timeout=10,
                connection={"ignored": True},
            )
        ]
    )
    assert cmd["queue"] == "orders"
    assert cmd["arguments"] == ENV
    assert cmd["policy"]["max_attempts"] == 3
    assert cmd["policy"]["backoff_seconds"] == [1, 2]
    assert cmd["policy"]["non_retryable_error_types"] == ["CardDeclined"]
    assert cmd["policy"]["heartbeat_timeout"] == 10
    assert cmd["policy"]["schedule_to_close_timeout"] == 300


def test_retry_policy_without_max_attempts_means_one() -> None:
    [cmd] = validate_commands([activity(retry_policy={"backoff_seconds": [5]})])
    assert cmd["policy"]["max_attempts"] == 1
    assert cmd["policy"]["backoff_seconds"] == [5]


def test_side_effect_accepts_external_reference_object() -> None:
    ref = {"codec": "avro", "external_storage": {"uri": "s3://bucket/key"}}
    [cmd] = validate_commands([{"type": "record_side_effect", "result": ref}])
    assert cmd["result"] == ref


def test_complete_workflow_accepts_envelope_bare_blob_and_null() -> None:
    out = validate_commands([{"type": "complete_workflow", "result": ENV}])
    assert out[0]["result"] == ENV
    assert validate_commands([{"type": "complete_workflow", "result": BLOB}])[0]["result"] == BLOB
    assert validate_commands([{"type": "complete_workflow", "result": None}])[0]["result"] is None


def test_child_defaults_parent_close_policy_to_abandon() -> None:
    [cmd] = validate_commands([{"type": "start_child_workflow", "workflow_type": "w"}])
    assert cmd["parent_close_policy"] == "abandon"
    [cmd] = validate_commands([{"type": "start_child_workflow", "workflow_type": "w", "parent_close_policy": "terminate"}])
    assert cmd["parent_close_policy"] == "terminate"


def test_upsert_search_attributes_accepts_all_value_kinds() -> None:
    attrs = {"Region": "eu", "Priority": 3, "Score": 1.5, "Vip": True, "Tags": ["a", "b"], "Old": None}
    [cmd] = validate_commands([{"type": "upsert_search_attributes", "attributes": attrs}])
    assert cmd["attributes"] == attrs


def test_open_condition_wait_keeps_key_fingerprint_and_zero_timeout() -> None:
    [cmd] = validate_commands(
        [{"type": "open_condition_wait", "condition_key": "k", "condition_definition_fingerprint": "sha256:1", "timeout_seconds": 0}]
    )
    assert cmd == {
        "type": "open_condition_wait",
        "timeout_seconds": 0,
        "condition_key": "k",
        "condition_definition_fingerprint": "sha256:1",
    }


def test_commands_keep_list_order_and_terminal_last() -> None:
    out = validate_commands([{"type": "start_timer", "delay_seconds": 5}, activity(), {"type": "complete_workflow"}])
    assert [c["type"] for c in out] == ["start_timer", "schedule_activity", "complete_workflow"]


def test_parallel_metadata_is_normalised_with_path() -> None:
    entry = {
        "parallel_group_id": "parallel-activities:2:2",
        "parallel_group_kind": "activity",
        "parallel_group_base_sequence": 2,
        "parallel_group_size": 2,
        "parallel_group_index": 1,
    }
    [cmd] = validate_commands([activity(**entry, parallel_group_path=[dict(entry, extra="dropped")])])
    assert cmd["par"] == {**entry, "parallel_group_path": [entry]}


def test_exactly_max_commands_is_accepted() -> None:
    out = validate_commands([{"type": "start_timer", "delay_seconds": 1}] * MAX_COMMANDS)
    assert len(out) == MAX_COMMANDS == 1000


# --- rejections ------------------------------------------------------------------------


@pytest.mark.parametrize("commands", [None, {}, "complete_workflow", [], 7], ids=["none", "dict", "str", "empty", "int"])
def test_non_list_or_empty_commands_rejected(commands: Any) -> None:
    assert_field_error(commands, "commands")


def test_non_object_command_is_validation_failed() -> None:
    err = rejected([activity(), "complete_workflow"])
    assert (err.status, err.reason) == (422, "validation_failed")
    assert len(err.errors) == 1
    assert next(iter(err.errors)).startswith("commands.1")


def test_non_object_command_error_is_keyed_on_type_field() -> None:
    assert_field_error([activity(), "complete_workflow"], "commands.1.type")


def test_update_commands_need_an_update_id_and_a_failure_message() -> None:
    assert_field_error([{"type": "complete_update"}], "commands.0.update_id")
    assert_field_error([{"type": "fail_update", "update_id": "u1"}], "commands.0.message")
    assert_field_error([{"type": "fail_update", "update_id": "u1", "message": "m", "non_retryable": "yes"}], "commands.0.non_retryable")


@pytest.mark.parametrize(
    "command",
    [
        {"type": "start_service_operation"},
        {"type": ""},
        {"type": None},
        {"activity_type": "no.type"},
    ],
    ids=["ext-start_service_operation", "empty", "null", "missing"],
)
def test_unknown_or_missing_type_rejected_on_type_field(command: dict[str, Any]) -> None:
    err = assert_field_error([{"type": "start_timer", "delay_seconds": 1}, command], "commands.1.type")
    assert "Unsupported command type" in err.message


@pytest.mark.parametrize(
    ("command", "key"),
    [
        (activity(activity_type=None), "commands.0.activity_type"),
        ({"type": "schedule_activity"}, "commands.0.activity_type"),
        (activity(activity_type=""), "commands.0.activity_type"),
        (activity(queue=""), "commands.0.queue"),
        (activity(arguments={"codec": "json", "blob": BLOB}), "commands.0.arguments.codec"),
        (activity(arguments={"codec": "avro"}), "commands.0.arguments.blob"),
        (activity(arguments=[1, 2]), "commands.0.arguments"),
        (activity(worker_session={"id": "s"}), "commands.0.worker_session.session_id"),
        (activity(cancellation_policy="wait"), "commands.0.cancellation_policy"),
        (activity(start_to_close_timeout=0), "commands.0.start_to_close_timeout"),
        (activity(heartbeat_timeout="10"), "commands.0.heartbeat_timeout"),
        ({"type": "start_timer", "delay_seconds": -1}, "commands.0.delay_seconds"),
        ({"type": "start_timer"}, "commands.0.delay_seconds"),
        ({"type": "start_timer", "delay_seconds": 1.5}, "commands.0.delay_seconds"),
        ({"type": "start_timer", "delay_seconds": True}, "commands.0.delay_seconds"),
        ({"type": "fail_workflow", "message": ""}, "commands.0.message"),
        ({"type": "fail_workflow"}, "commands.0.message"),
        ({"type": "record_side_effect", "result": ""}, "commands.0.result"),
        ({"type": "record_side_effect"}, "commands.0.result"),
        ({"type": "start_child_workflow"}, "commands.0.workflow_type"),
        ({"type": "start_child_workflow", "workflow_type": "w", "parent_close_policy": "kill"}, "commands.0.parent_close_policy"),
        ({"type": "start_child_workflow", "workflow_type": "w", "request_cancellation": True}, "commands.0.request_cancellation"),
        (
            {"type": "start_child_workflow", "workflow_type": "w", "execution_timeout_seconds": 10, "run_timeout_seconds": 20},
            "commands.0.run_timeout_seconds",
        ),
        ({"type": "upsert_search_attributes", "attributes": []}, "commands.0.attributes"),
        ({"type": "upsert_search_attributes", "attributes": {"Bad": {"x": 1}}}, "commands.0.attributes.Bad"),
        ({"type": "upsert_search_attributes", "attributes": {"Mixed": ["a", 1]}}, "commands.0.attributes.Mixed"),
        ({"type": "open_condition_wait", "timeout_seconds": -1}, "commands.0.timeout_seconds"),
        ({"type": "open_condition_wait", "condition_key": 5}, "commands.0.condition_key"),
        ({"type": "complete_workflow", "result": {"codec": "json", "blob": "e30="}}, "commands.0.result.codec"),
        ({"type": "complete_workflow", "result": 42}, "commands.0.result"),
        ({"type": "continue_as_new", "workflow_type": ""}, "commands.0.workflow_type"),
        ({"type": "continue_as_new", "arguments": "not-an-envelope"}, "commands.0.arguments"),
    ],
)
def test_field_errors(command: dict[str, Any], key: str) -> None:
    assert_field_error([command], key)


@pytest.mark.parametrize(
    ("marker", "key"),
    [
        ({"version": 2, "min_supported": -1, "max_supported": 1}, "commands.0.version"),
        ({"version": -2, "min_supported": -1, "max_supported": 1}, "commands.0.version"),
        ({"version": 1, "min_supported": 2, "max_supported": 1}, "commands.0.version"),
        ({"version": "1", "min_supported": -1, "max_supported": 1}, "commands.0.version"),
        ({"version": 1, "min_supported": None, "max_supported": 1}, "commands.0.min_supported"),
        ({"version": 1, "min_supported": -1, "max_supported": True}, "commands.0.max_supported"),
        ({"change_id": "", "version": 1, "min_supported": -1, "max_supported": 1}, "commands.0.change_id"),
    ],
)
def test_version_marker_out_of_range_or_mistyped(marker: dict[str, Any], key: str) -> None:
    assert_field_error([{"type": "record_version_marker", "change_id": "c", **marker}], key)


def test_version_marker_bounds_are_inclusive() -> None:
    for version in (-1, 0, 1):
        validate_commands(
            [{"type": "record_version_marker", "change_id": "c", "version": version, "min_supported": -1, "max_supported": 1}]
        )


@pytest.mark.parametrize(
    ("policy", "key"),
    [
        ("three", "commands.0.retry_policy"),
        ({"max_attempts": 0}, "commands.0.retry_policy.max_attempts"),
        ({"max_attempts": 2.0}, "commands.0.retry_policy.max_attempts"),
        ({"max_attempts": True}, "commands.0.retry_policy.max_attempts"),
        ({"backoff_seconds": [1, -1]}, "commands.0.retry_policy.backoff_seconds"),
        ({"backoff_seconds": [1.5]}, "commands.0.retry_policy.backoff_seconds"),
        ({"backoff_seconds": "1,2"}, "commands.0.retry_policy.backoff_seconds"),
        ({"non_retryable_error_types": [""]}, "commands.0.retry_policy.non_retryable_error_types"),
        ({"non_retryable_error_types": "CardDeclined"}, "commands.0.retry_policy.non_retryable_error_types"),
    ],
)
def test_bad_retry_policy(policy: Any, key: str) -> None:
    assert_field_error([activity(retry_policy=policy)], key)


def test_bad_child_retry_policy() -> None:
    assert_field_error(
        [{"type": "start_child_workflow", "workflow_type": "w", "retry_policy": {"max_attempts": 0}}],
        "commands.0.retry_policy.max_attempts",
    )


@pytest.mark.parametrize(
    ("timeouts", "key"),
    [
        ({"heartbeat_timeout": 31, "start_to_close_timeout": 30}, "commands.0.heartbeat_timeout"),
        ({"start_to_close_timeout": 301, "schedule_to_close_timeout": 300}, "commands.0.start_to_close_timeout"),
        ({"schedule_to_start_timeout": 301, "schedule_to_close_timeout": 300}, "commands.0.schedule_to_start_timeout"),
    ],
)
def test_timeout_ordering(timeouts: dict[str, int], key: str) -> None:
    assert_field_error([activity(**timeouts)], key)


def test_equal_timeouts_are_allowed() -> None:
    validate_commands(
        [activity(heartbeat_timeout=30, start_to_close_timeout=30, schedule_to_start_timeout=30, schedule_to_close_timeout=30)]
    )


def test_second_command_error_names_its_index() -> None:
    assert_field_error([{"type": "start_timer", "delay_seconds": 1}, activity(activity_type="")], "commands.1.activity_type")


@pytest.mark.parametrize(
    "commands",
    [
        [{"type": "complete_workflow"}, {"type": "start_timer", "delay_seconds": 1}],
        [{"type": "fail_workflow", "message": "x"}, {"type": "complete_workflow"}],
        [{"type": "continue_as_new"}, activity()],
    ],
    ids=["complete-then-step", "two-terminals", "continue-then-step"],
)
def test_terminal_command_not_last_is_invalid_commands(commands: list[dict[str, Any]]) -> None:
    err = rejected(commands)
    assert (err.status, err.reason) == (409, "invalid_commands")
    assert err.errors == {}


def test_more_than_max_commands_is_structural_limit() -> None:
    err = rejected([{"type": "start_timer", "delay_seconds": 1}] * (MAX_COMMANDS + 1))
    assert (err.status, err.reason) == (422, "structural_limit_exceeded")
    assert err.extra == {"limit_kind": "command_batch_size", "current_value": 1001, "configured_limit": 1000}


@pytest.mark.parametrize(
    ("par", "status", "key"),
    [
        ({"parallel_group_index": 3, "parallel_group_size": 3}, 409, None),
        ({"parallel_group_size": 0, "parallel_group_index": 0}, 409, None),
        ({"parallel_group_size": 1001, "parallel_group_index": 0}, 409, None),
        ({"parallel_group_id": ""}, 422, "commands.0.parallel_group_path.0"),
        ({"parallel_group_base_sequence": -1}, 422, "commands.0.parallel_group_path.0.parallel_group_base_sequence"),
    ],
)
def test_bad_parallel_metadata(par: dict[str, Any], status: int, key: str | None) -> None:
    base = {
        "parallel_group_id": "parallel-activities:1:3",
        "parallel_group_kind": "activity",
        "parallel_group_base_sequence": 1,
        "parallel_group_size": 3,
        "parallel_group_index": 0,
    }
    err = rejected([activity(**{**base, **par})])
    assert err.status == status
    if key is None:
        assert err.reason == "invalid_commands"
    else:
        assert err.reason == "validation_failed"
        assert list(err.errors) == [key]


def test_upsert_memo_takes_an_avro_map_and_refuses_what_replay_would_refuse() -> None:
    from persistence import avro

    [cmd] = validate_commands([{"type": "upsert_memo", "entries": {"codec": "avro", "blob": avro.encode({"stage": "a", "gone": None})}}])
    assert cmd["decoded"] == {"stage": "a", "gone": None}
    assert_field_error([{"type": "upsert_memo", "entries": ENV}], "commands.0.entries")  # a list, not a map
    assert_field_error([{"type": "upsert_memo", "entries": {"codec": "avro", "blob": avro.encode({"-1": 1})}}], "commands.0.entries")
    assert_field_error([{"type": "upsert_memo", "entries": {"codec": "avro", "blob": avro.encode({"b": b"x"})}}], "commands.0.entries")
