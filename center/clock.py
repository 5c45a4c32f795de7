"""A node's times on the center's clock.

A node that booted without a clock (no RTC battery, NTP not yet reached) or never synced on a closed network
stamps its alerts with a wrong time, and the dispatcher's list is sorted by it: a case dated 2000 falls to
the last page. A message's `sent_utc` (the node's clock as it left) against the center's receipt tells how
far off the node is, whatever the message waited in the node's outbox.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# A node clock further off than this is corrected: NTP's error and a message's trip are far inside it, and a
# case is not misplaced on the list by it.
CLOCK_SKEW = dt.timedelta(minutes=2)


@dataclass(frozen=True)
class NodeClock:
    """How far a node's clock was off as a message left it: the center's time minus the node's."""

    offset: dt.timedelta | None  # None: within CLOCK_SKEW, or not known (an older node sends no sent_utc)
    received: dt.datetime  # the center's clock when the message came

    def on_center_clock(self, node_time: dt.datetime | None) -> dt.datetime | None:
        """`node_time` moved by the offset; never later than the message came, which no time it tells can be."""
        if node_time is None:
            return None
        if self.offset is not None:
            node_time = node_time + self.offset
        return min(node_time, self.received) if node_time > self.received + CLOCK_SKEW else node_time


def node_clock(sent: dt.datetime | None, received: dt.datetime) -> NodeClock:
    """The node's clock as a message sent at `sent` (its clock) came at `received` (ours)."""
    if sent is None:
        return NodeClock(None, received)
    offset = received - sent
    return NodeClock(offset if abs(offset) > CLOCK_SKEW else None, received)
