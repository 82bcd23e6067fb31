# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who fetches which byte range: pieces per connection, and taking over the tail of a slow range."""

import time

from ansible_collections.strata.ops.plugins.module_utils.transfer.http import MIB

CHUNK = 256 * 1024  # one read: a connection's share of the file advances by this much at most

STEAL_MIN_BYTES = MIB  # smallest range handed over to an idle connection near the end

STEAL_SECONDS = 0.25  # a range is split only when that ends it this much sooner


class _Task:
    """One connection's range [pos, end); ``pos`` moves as bytes are written, ``end`` may shrink."""

    __slots__ = ("end", "p0", "pos", "t0")

    def __init__(self, start, end):
        self.pos = start
        self.end = end
        self.t0 = None  # when its bytes began to arrive
        self.p0 = start

    def remaining(self):
        return self.end - self.pos

    def rate(self, now, settle=0.5):
        if self.t0 is None or now - self.t0 < settle:
            return None
        return (self.pos - self.p0) / (now - self.t0)

    def __repr__(self):
        return f"_Task({self.pos}, {self.end})"


class Scheduler:
    """Which bytes a connection fetches next; the caller holds the download's lock.

    * The missing ranges are handed out front to back in pieces of ``piece_size`` (see
      ``piece_size_for``: one piece per connection, none under ``min_split``); a remainder
      under half of ``min_split`` stays with the piece before it.
    * When nothing is left to hand out, an idle connection takes over the end of the range in
      flight that would take longest to finish, cut where both parts finish together at the
      rates seen (in halves while no rate is known yet), so that no connection idles while
      another still has seconds of work: the tail of the download keeps every connection
      busy. Neither part may be under ``min_share`` bytes, and the split must end the range at
      least ``steal_seconds`` sooner (a new request costs a round trip: not worth it for less).
    """

    def __init__(
        self,
        missing,
        piece_size,
        *,
        min_split=0,
        min_share=None,
        steal_seconds=STEAL_SECONDS,
        steal=True,
    ):
        self.pending = sorted([int(s), int(e)] for s, e in missing if e > s)
        self.piece_size = max(1, int(piece_size))
        self.merge_below = min_split // 2
        self.min_share = max(CHUNK, int(STEAL_MIN_BYTES if min_share is None else min_share))
        self.steal_seconds = steal_seconds
        self.steal_enabled = steal
        self.active = set()
        self.steals = 0

    @staticmethod
    def piece_size_for(missing_bytes, split, min_split):
        """Pieces of at least ``min_split`` bytes, ``split`` of them when the bytes allow it."""
        if missing_bytes <= 0:
            return max(1, min_split)
        return max(1, min_split, -(-missing_bytes // max(1, split)))

    def busy(self):
        return bool(self.pending or self.active)

    def take(self, now=None, rate=None):
        """The next task for a connection whose own rate is ``rate`` (bytes/s, None: unknown)."""
        if self.pending:
            start, end = self.pending.pop(0)
            if end - start > self.piece_size + self.merge_below:
                self.pending.insert(0, [start + self.piece_size, end])
                end = start + self.piece_size
            task = _Task(start, end)
            self.active.add(task)
            return task
        if not self.steal_enabled:
            return None
        return self._steal(time.time() if now is None else now, rate)

    def _steal(self, now, rate):
        rates = dict((t, t.rate(now)) for t in self.active)
        known = sorted(r for r in rates.values() if r)
        typical = known[len(known) // 2] if known else rate or 1.0  # 1.0: bytes stand for seconds
        mine = rate or typical
        best = None
        for task in self.active:
            left = task.remaining()
            if left < 2 * self.min_share:
                continue
            # a stalled connection (0 bytes/s) gives nearly all it has left
            theirs = typical if rates[task] is None else max(rates[task], 1.0)
            share = int(left * mine / (theirs + mine))  # both parts end together at these rates
            share = min(max(share, self.min_share), left - self.min_share)
            saved = left / theirs - max(share / mine, (left - share) / theirs)
            if saved < self.steal_seconds:
                continue  # a new request costs a round trip: not worth it for less
            key = (left / theirs, left, -task.pos)  # the range that would end last
            if best is None or key > best[0]:
                best = (key, task, share)
        if best is None:
            return None
        _key, victim, share = best
        mid = victim.end - share
        if (mid - mid % 4096) - victim.pos >= self.min_share:
            mid -= mid % 4096  # page-aligned writes when it can
        task = _Task(mid, victim.end)
        victim.end = mid
        self.active.add(task)
        self.steals += 1
        return task

    def release(self, task):
        """A connection is done with ``task``: what it did not fetch goes back to be handed out."""
        self.active.discard(task)
        if task.pos < task.end:
            self.pending.append([task.pos, task.end])
            self.pending.sort()
