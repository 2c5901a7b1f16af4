"""One "newest frame wins" slot: the mailbox between a producer thread and its consumer.

A live stream must never queue: a frame that waits is latency. So wherever one thread hands
frames to another in live mode (the webcam's grabber thread, the reconnecting source's worker,
the pipeline's tracking thread), the hand-over is a :class:`LatestSlot`: it holds at most one
item, a new item replaces one nobody took yet, and every such replacement is counted in
:attr:`LatestSlot.dropped`.

Producer side: :meth:`~LatestSlot.put` (never blocks), :meth:`~LatestSlot.close` when it is done
(optionally with the exception that stopped it). Consumer side: :meth:`~LatestSlot.take` (wait
for an item nobody took yet and mark it taken) or :meth:`~LatestSlot.peek` (wait for one without
taking it). Every item gets a sequence number (0, 1, 2, ... in put order; gaps in what the
consumer sees are drops).

Example:
    >>> slot = LatestSlot()
    >>> slot.put("a"), slot.put("b")        # "a" was never taken: dropped
    (False, True)
    >>> slot.take(timeout=0), slot.dropped
    ('b', 1)
    >>> slot.take(timeout=0) is None        # nothing new: None at once (timeout 0)
    True
    >>> slot.put("c"); slot.close()
    False
    >>> slot.take(timeout=0, with_seq=True)  # what was put before close is still delivered
    (2, 'c')
    >>> slot.take()
    Traceback (most recent call last):
    ...
    warpcam.realtime.io.slot.SlotClosed: the slot is closed
"""
from __future__ import annotations

import threading
import time
from typing import Generic, Optional, TypeVar

__all__ = ["LatestSlot", "SlotClosed"]

T = TypeVar("T")


class SlotClosed(Exception):
    """Raised by :meth:`LatestSlot.take` / :meth:`LatestSlot.peek` once the slot is closed (without
    an error) and its last item was taken: the producer is done."""


class LatestSlot(Generic[T]):
    """A thread-safe one-item mailbox in which the newest item wins.

    State (all guarded by one :class:`threading.Condition`):

    - the newest item put and its sequence number :attr:`seq` (``-1`` before the first put);
    - the sequence number of the last item taken, :attr:`taken_seq` (``-1`` before the first
      take); the item is *untaken* while ``seq > taken_seq``;
    - :attr:`dropped`: untaken items that a newer :meth:`put` replaced;
    - closed or not, and the producer's error (see :meth:`close`).

    Args:
        cond: share an existing condition variable instead of creating one. A consumer that
            waits for more than the slot (a deadline, another flag) holds ``cond`` itself, calls
            ``take(timeout=0)`` inside it and waits on ``cond``; :meth:`put` and :meth:`close`
            notify it. It must be re-entrant (the default ``threading.Condition()`` is: its lock
            is an ``RLock``).

    Items must not be ``None`` (``None`` means "nothing within the timeout").
    """

    def __init__(self, cond: Optional[threading.Condition] = None) -> None:
        self._cond = cond if cond is not None else threading.Condition()
        self._item: Optional[T] = None
        self._seq = -1
        self._taken_seq = -1
        self._dropped = 0
        self._closed = False
        self._error: Optional[BaseException] = None

    # -- producer --------------------------------------------------------------------------------
    def put(self, item: T) -> bool:
        """Make ``item`` the newest item and wake the consumer; never blocks.

        Returns:
            ``True`` when an untaken item was replaced (it is counted in :attr:`dropped`).
            ``False`` otherwise, and also after :meth:`close` (the item is discarded then).

        Raises:
            ValueError: ``item`` is ``None``.
        """
        if item is None:
            raise ValueError("LatestSlot items must not be None")
        with self._cond:
            if self._closed:
                return False
            dropped = self._seq > self._taken_seq
            if dropped:
                self._dropped += 1  # replaced before anyone took it
            self._seq += 1
            self._item = item
            self._cond.notify_all()
            return dropped

    def close(self, error: Optional[BaseException] = None) -> None:
        """No more items: wake every waiter. Later :meth:`put` calls are ignored.

        An item put before ``close`` and not taken yet is still delivered; after it,
        :meth:`take` / :meth:`peek` raise ``error`` (the producer's failure, re-raised in the
        consumer) or :class:`SlotClosed` when ``error`` is ``None``. The first close wins
        (a later call does not replace its error). Either side may close.
        """
        with self._cond:
            if not self._closed:
                self._closed = True
                self._error = error
            self._cond.notify_all()

    # -- consumer --------------------------------------------------------------------------------
    def take(self, timeout: Optional[float] = None, *, with_seq: bool = False):
        """Wait for an untaken item, mark it taken and return it.

        Args:
            timeout: seconds to wait; ``None`` waits until an item arrives or the slot is
                closed; ``0`` does not wait.
            with_seq: return ``(seq, item)`` instead of ``item``.

        Returns:
            The newest item (or ``(seq, item)``), or ``None`` when ``timeout`` passed first.

        Raises:
            BaseException: the error given to :meth:`close`, once the slot is closed and its last
                item taken.
            SlotClosed: the same, for a close without error.
        """
        return self._wait(timeout, take=True, with_seq=with_seq)

    def peek(self, timeout: Optional[float] = None, *, with_seq: bool = False):
        """As :meth:`take`, but leave the item untaken (a later :meth:`take` returns it too, and
        a :meth:`put` before that counts it as dropped)."""
        return self._wait(timeout, take=False, with_seq=with_seq)

    def _wait(self, timeout: Optional[float], take: bool, with_seq: bool):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._seq > self._taken_seq:
                    item = self._item
                    if take:
                        # Marked in the same critical section, so a put never counts a taken
                        # item as dropped; the slot lets go of it (the consumer owns it now).
                        self._taken_seq = self._seq
                        self._item = None
                    return (self._seq, item) if with_seq else item
                if self._closed:
                    if self._error is not None:
                        raise self._error
                    raise SlotClosed("the slot is closed")
                if deadline is None:
                    self._cond.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    # -- state -----------------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Untaken items replaced by a newer one."""
        with self._cond:
            return self._dropped

    @property
    def seq(self) -> int:
        """Sequence number of the newest item put (``-1`` before the first)."""
        with self._cond:
            return self._seq

    @property
    def taken_seq(self) -> int:
        """Sequence number of the last item taken (``-1`` before the first)."""
        with self._cond:
            return self._taken_seq

    @property
    def pending(self) -> bool:
        """Whether an untaken item is waiting."""
        with self._cond:
            return self._seq > self._taken_seq

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    @property
    def cond(self) -> threading.Condition:
        """The condition variable guarding the slot (notified by :meth:`put` and
        :meth:`close`)."""
        return self._cond

    def __repr__(self) -> str:
        return (f"LatestSlot(seq={self._seq}, taken={self._taken_seq}, dropped={self._dropped}"
                f"{', closed' if self._closed else ''})")
