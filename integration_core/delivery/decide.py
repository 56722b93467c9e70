"""The next action for a routing: one pure function, used by the delivery engine (`engine.py`) and the dry run
(`dryrun.py`), so what a dry run predicts is what a run does.

No I/O, no clock: the caller states what it knows (`RoutingState`) and gets an `Action` back. The engine asks
twice for a routing it claimed: before any request (look up first, or send), and after a lookup with its result
(adopt, send, give up, or — for reconcile — requeue).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from integration_core.domain import RoutingStatus

__all__ = ["Action", "ConnectionState", "Lookup", "RoutingState", "next_action"]


class ConnectionState(enum.StrEnum):
    none = "none"  # the company has no connection
    disabled = "disabled"  # it has one, switched off
    misconfigured = "misconfigured"  # enabled, but lacks a setting its delivery mode needs
    ready = "ready"


class Lookup(enum.StrEnum):
    not_done = "not_done"
    found = "found"  # the marker is at the provider: an earlier attempt's record
    not_found = "not_found"


class Action(enum.StrEnum):
    wait_for_connection = "wait_for_connection"  # no enabled connection: waits in no_integration
    fail_misconfigured = "fail_misconfigured"  # fails without sending (the provider refuses before any request)
    nothing_delivered = "nothing_delivered"  # already synced: never sent again
    held_by_run = "held_by_run"  # another run's lease: its outcome decides
    wait_for_retry = "wait_for_retry"  # failed: nothing happens until an operator retries it
    wait_for_enable = "wait_for_enable"  # no_integration: nothing happens until the connection is enabled
    look_up = "look_up"  # an earlier request may have reached the provider: look the marker up first
    adopt = "adopt"  # the lookup found the record: synced without sending
    send = "send"
    give_up = "give_up"  # the lookup found nothing and every attempt is used: failed (attempts_exhausted)
    requeue = "requeue"  # reconcile's lookup found nothing: back to pending, sent by the next delivery run

    @property
    def sends(self) -> bool:
        return self is Action.send


@dataclass(frozen=True)
class RoutingState:
    """What is known about a routing when deciding.

    Attributes:
        status: the routing's status (`RoutingStatus`).
        lookup_required: an earlier request may have reached the provider.
        attempts: delivery attempts used so far; max_attempts: the limit (DELIVERY_MAX_ATTEMPTS).
        connection: the receiving company's connection.
        own_claim: the caller holds the routing's lease (the engine): `claimed` is then ours to act on.
        lookup: the result of a lookup made in this attempt, if any.
        lookup_only: reconcile — after a lookup that finds nothing, requeue rather than send.
    """

    status: str
    lookup_required: bool
    attempts: int
    max_attempts: int
    connection: ConnectionState = ConnectionState.ready
    own_claim: bool = False
    lookup: Lookup = Lookup.not_done
    lookup_only: bool = False

    @property
    def needs_lookup(self) -> bool:
        return self.lookup_required or self.status == RoutingStatus.needs_reconcile

    def after_lookup(self, found: bool) -> RoutingState:
        return replace(self, lookup=Lookup.found if found else Lookup.not_found)


def next_action(state: RoutingState) -> Action:
    """The next thing a delivery run does with the routing (see `Action`)."""
    if state.connection in (ConnectionState.none, ConnectionState.disabled):
        return Action.wait_for_connection
    if state.connection is ConnectionState.misconfigured:
        return Action.fail_misconfigured
    status = state.status
    if status == RoutingStatus.synced:
        return Action.nothing_delivered
    if status == RoutingStatus.claimed and not state.own_claim:
        return Action.held_by_run
    if status == RoutingStatus.failed:
        return Action.wait_for_retry
    if status == RoutingStatus.no_integration:
        return Action.wait_for_enable
    if state.needs_lookup:
        if state.lookup is Lookup.not_done:
            return Action.look_up
        if state.lookup is Lookup.found:
            return Action.adopt
        if state.lookup_only:
            return Action.requeue
        if state.attempts >= state.max_attempts:
            return Action.give_up
    return Action.send
