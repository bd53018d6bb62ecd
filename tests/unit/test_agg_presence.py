"""Presence rules (``aggregator.presence``): the latest status-topic message by arrival wins, every case."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.presence import Presence, PresenceEvent, apply_presence

ON, OFF = True, False


def ev(online: bool, ms: int) -> PresenceEvent:
    return PresenceEvent("d", online, ms)


@pytest.mark.parametrize(("start", "events", "end"), [
    (Presence(), [], Presence()),
    (Presence(), [ev(ON, 10)], Presence(1, 10)),                             # first birth
    (Presence(), [ev(OFF, 10)], Presence(0, 10)),                            # will before any birth
    (Presence(1, 10), [ev(OFF, 20)], Presence(0, 20)),                       # will
    (Presence(0, 20), [ev(ON, 30)], Presence(1, 30)),                        # reconnect: re-published birth
    (Presence(1, 10), [ev(OFF, 20), ev(ON, 30)], Presence(1, 30)),           # will + reconnect in one batch
    (Presence(1, 10), [ev(OFF, 20), ev(ON, 20)], Presence(1, 20)),           # same ms: the later message
    (Presence(0, 20), [ev(ON, 20), ev(OFF, 20)], Presence(0, 20)),
    (Presence(0, 50), [ev(ON, 30)], Presence(0, 50)),                        # an older held record released
    (Presence(1, 50), [ev(ON, 50)], Presence(1, 50)),                        # retained replay on resubscribe
    (Presence(1, 10), [ev(OFF, 40), ev(ON, 30)], Presence(0, 40)),           # out of order: newest time wins
])
def test_table(start: Presence, events: list[PresenceEvent], end: Presence) -> None:
    assert apply_presence(start, events) == end


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 100)), max_size=20),
       st.one_of(st.none(), st.tuples(st.sampled_from([0, 1]), st.integers(0, 100))))
def test_the_newest_event_wins(raw: list[tuple[bool, int]], start: tuple[int, int] | None) -> None:
    current = Presence(*start) if start else Presence()
    events = [ev(online, ms) for online, ms in raw]
    got = apply_presence(current, events)
    candidates = [(ms, i, 1 if online else 0) for i, (online, ms) in enumerate(raw)
                  if current.status_ms is None or ms >= current.status_ms]
    if not candidates:
        assert got == current
    else:
        # the maximum by time, ties to the later message; but an event only counts if it beat the state
        # before it, and with times only growing that is exactly the last maximum
        ms, _, online = max(candidates)
        assert got == Presence(online, ms)
