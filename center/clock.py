"""A node's times on the center's clock.

A node that booted without a clock (no RTC battery, NTP not yet reached) or never synced on a closed network
stamps its alerts with a wrong time, and the dispatcher's list is sorted by it: a case dated 2000 falls to
the last page. Two measures must agree before a time is moved. The node's latest stats message, as it came
(never a retained copy), tells how far its clock is off now: the center's receipt minus the stats' `sent_utc`.
An alert's own receipt minus its `sent_utc` says the same when the node's clock was off as it sent; it says
more when the message waited on the way (the center down, the broker holding it, a resend with an old
stamp), and then the node's time stands.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# A node clock further off than this is corrected: NTP's error and a message's trip are far inside it, and a
# case is not misplaced on the list by it. It is also how closely the two measures must agree.
CLOCK_SKEW = dt.timedelta(minutes=2)
# A message's wait only adds to receipt minus sent, so the node's offset is the least of its stats' within this
# (a center that lagged minutes behind its messages, all of them late alike, does not take that for the clock);
# a larger one is believed once it has lasted this long, or at once after the node connected again (a reboot).
CLOCK_SAMPLE_WINDOW = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class NodeClock:
    """How far a node's clock was off as a message left it: the center's time minus the node's."""

    offset: dt.timedelta | None  # None: within CLOCK_SKEW, not known, or the two measures disagree
    received: dt.datetime  # the center's clock when the message came
    sent: dt.datetime | None = None  # the node's clock as it left

    def on_center_clock(self, node_time: dt.datetime | None) -> dt.datetime | None:
        """`node_time` moved by the offset; never later than the message came, which no time it tells can be.

        A time later than the message left was told by the node's clock before it was set back (an alert
        queued before a reboot to a dead RTC's date): the offset is not its, and it stands."""
        if node_time is None:
            return None
        if self.offset is not None and (self.sent is None or node_time <= self.sent + CLOCK_SKEW):
            node_time = node_time + self.offset
        return min(node_time, self.received) if node_time > self.received + CLOCK_SKEW else node_time


def node_clock(sent: dt.datetime | None, received: dt.datetime, measured_s: float | None) -> NodeClock:
    """The node's clock as a message sent at `sent` (its clock) came at `received` (ours); `measured_s` is the
    offset its latest live stats showed (`Node.clock_offset_s`)."""
    if sent is None or measured_s is None:
        return NodeClock(None, received)
    measured = dt.timedelta(seconds=measured_s)
    if abs(measured) <= CLOCK_SKEW or abs(received - sent - measured) > CLOCK_SKEW:
        return NodeClock(None, received)
    return NodeClock(measured, received, sent)


def keep_clock_sample(node, node_time: dt.datetime, received: dt.datetime) -> None:
    """Fold one live stats message's reading of the node's clock into `node` (a center.db.Node)."""
    sample = (received - node_time).total_seconds()
    least, since = node.clock_offset_s, node.clock_offset_at
    if least is None or since is None or sample < least or received - since > CLOCK_SAMPLE_WINDOW:
        node.clock_offset_s, node.clock_offset_at = sample, received


def told_offset(told: dt.datetime | None, kept: dt.datetime | None) -> dt.timedelta | None:
    """How far a time the center kept (`kept`) was moved from what the node told (`told`), when it was."""
    if told is None or kept is None or abs(kept - told) <= CLOCK_SKEW:
        return None
    return kept - told
