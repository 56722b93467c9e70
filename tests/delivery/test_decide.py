"""`next_action`: the one rule the engine and the dry run follow, as a table (pure: no database, no clock)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from integration_core.delivery.decide import Action, ConnectionState, Lookup, RoutingState, next_action

MAX = 5
READY, NONE, DISABLED, BROKEN = (
    ConnectionState.ready,
    ConnectionState.none,
    ConnectionState.disabled,
    ConnectionState.misconfigured,
)

# (status, lookup_required, attempts, connection, own_claim, lookup, lookup_only) -> action
CASES: list[tuple[str, bool, int, ConnectionState, bool, Lookup, bool, Action]] = [
    # no connection to deliver through: whatever the status, it waits
    ("pending", False, 0, NONE, False, Lookup.not_done, False, Action.wait_for_connection),
    ("needs_reconcile", True, 2, DISABLED, False, Lookup.not_done, False, Action.wait_for_connection),
    ("synced", False, 1, NONE, False, Lookup.not_done, False, Action.wait_for_connection),
    # a connection lacking a setting its mode needs: fails without sending
    ("pending", False, 0, BROKEN, False, Lookup.not_done, False, Action.fail_misconfigured),
    # states nothing is sent from
    ("synced", False, 1, READY, False, Lookup.not_done, False, Action.nothing_delivered),
    ("claimed", False, 1, READY, False, Lookup.not_done, False, Action.held_by_run),
    ("failed", True, 5, READY, False, Lookup.not_done, False, Action.wait_for_retry),
    ("no_integration", False, 0, READY, False, Lookup.not_done, False, Action.wait_for_enable),
    # nothing can have reached the provider: send (even with every attempt used: only a lookup gives up)
    ("pending", False, 0, READY, False, Lookup.not_done, False, Action.send),
    ("pending", False, MAX, READY, False, Lookup.not_done, False, Action.send),
    ("claimed", False, 0, READY, True, Lookup.not_done, False, Action.send),
    # an earlier request may have reached it: look up first ...
    ("pending", True, 1, READY, False, Lookup.not_done, False, Action.look_up),
    ("needs_reconcile", False, 1, READY, False, Lookup.not_done, False, Action.look_up),
    ("claimed", True, 1, READY, True, Lookup.not_done, False, Action.look_up),
    ("claimed", True, MAX, READY, True, Lookup.not_done, True, Action.look_up),
    # ... then adopt what is found, else send / give up / requeue (reconcile)
    ("claimed", True, 1, READY, True, Lookup.found, False, Action.adopt),
    ("claimed", True, MAX, READY, True, Lookup.found, False, Action.adopt),
    ("claimed", True, MAX, READY, True, Lookup.found, True, Action.adopt),
    ("claimed", True, 1, READY, True, Lookup.not_found, False, Action.send),
    ("claimed", True, MAX - 1, READY, True, Lookup.not_found, False, Action.send),
    ("claimed", True, MAX, READY, True, Lookup.not_found, False, Action.give_up),
    ("claimed", True, MAX + 3, READY, True, Lookup.not_found, False, Action.give_up),
    ("claimed", True, 1, READY, True, Lookup.not_found, True, Action.requeue),
    ("claimed", True, MAX, READY, True, Lookup.not_found, True, Action.requeue),
]


@pytest.mark.parametrize(
    ("status", "lookup_required", "attempts", "connection", "own_claim", "lookup", "lookup_only", "expected"), CASES
)
def test_next_action(
    status: str,
    lookup_required: bool,
    attempts: int,
    connection: ConnectionState,
    own_claim: bool,
    lookup: Lookup,
    lookup_only: bool,
    expected: Action,
) -> None:
    state = RoutingState(
        status=status,
        lookup_required=lookup_required,
        attempts=attempts,
        max_attempts=MAX,
        connection=connection,
        own_claim=own_claim,
        lookup=lookup,
        lookup_only=lookup_only,
    )
    assert next_action(state) is expected
    assert expected.sends is (expected is Action.send)


def test_after_lookup_moves_from_look_up_to_the_outcome() -> None:
    state = RoutingState(status="claimed", lookup_required=True, attempts=MAX, max_attempts=MAX, own_claim=True)
    assert next_action(state) is Action.look_up
    assert next_action(state.after_lookup(True)) is Action.adopt
    assert next_action(state.after_lookup(False)) is Action.give_up
    assert next_action(replace(state, attempts=1).after_lookup(False)) is Action.send


def test_every_action_is_reachable() -> None:
    assert {case[-1] for case in CASES} == set(Action)
