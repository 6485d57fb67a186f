"""Calls to Proxmox on threads that may never end: how many run (or hang) at once, and a read given up.

No I/O of its own: reader.py hands in the calls (proxmox.py's). A thread blocked on an answer that drips a byte at a
time outlives any timeout requests can set; what bounds threads and sockets is not starting more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Threads on calls beside the two lists (the refresh's extra round and the per-node reads together),
# running or abandoned on an answer that drips: past this, a call is not made but counted "busy".
MAX_CALL_THREADS = 12


class Abandoned(Exception):
    """The read this call belonged to was given up at its deadline: the call is not made."""


class ProxmoxBusy(Exception):
    """Not asked: earlier calls to Proxmox, still unanswered, hold every thread the reads may use (or the node).

    Not http/clients.Busy, which is a client of ours with too many requests waiting.
    """


class Threads:
    """The threads on Proxmox calls, running or left on an answer that never ends, counted against one limit;
    and the nodes such a call is with, which get no second one meanwhile (pvedaemon has 3 workers per node)."""

    def __init__(self, limit: int = MAX_CALL_THREADS):
        self._limit, self._live, self._lock = limit, 0, threading.Lock()
        self._nodes: set[str] = set()

    @property
    def live(self) -> int:
        """Threads started and not yet ended."""
        return self._live

    def take(self, wanted: int) -> int:
        """Up to `wanted` threads may start: how many."""
        with self._lock:
            granted = max(min(wanted, self._limit - self._live), 0)
            self._live += granted
            return granted

    def give(self) -> None:
        """One thread ended."""
        with self._lock:
            self._live -= 1

    def hold(self, node: str | None) -> bool:
        """Mark a call with `node` (None: with no node in particular); False when one is with it already."""
        with self._lock:
            if node is None:
                return True
            if node in self._nodes:
                return False
            self._nodes.add(node)
            return True

    def release(self, node: str | None) -> None:
        """The call with `node` ended."""
        with self._lock:
            self._nodes.discard(node)


class Shared:
    """One value (the logged-in client) made by one caller at a time: who comes while it is made waits and shares it,
    or its failure, rather than making a second one at once (a password login per thread)."""

    def __init__(self):
        self._value, self._lock = None, threading.Lock()
        self._made, self._error = 0, None  # attempts ended, either way; the last one's failure

    @property
    def value(self) -> object:
        """The value made, None while there is none."""
        return self._value

    def get(self, make: Callable[[], object]) -> object:
        """The value, made by `make()` if there is none; the failure of the attempt this caller waited for, raised."""
        value, seen = self._value, self._made
        if value is not None:
            return value
        with self._lock:
            if self._value is not None:
                return self._value
            if self._made != seen and self._error is not None:
                raise self._error  # the attempt waited for failed: the next read tries again, not this caller
            try:
                self._value, self._error = make(), None
            except Exception as exc:
                self._error = exc
                raise
            finally:
                self._made += 1
            return self._value

    def forget(self) -> None:
        """Make the value anew at the next get() (a ticket expired, a session left on a call that hangs)."""
        self._value = None


def gather(calls: dict, limit: float, workers: int, threads: Threads | None = None,
           abandoned: threading.Event | None = None, node_of: Callable[[object], str | None] = lambda key: None) -> dict:
    """Run the calls on up to `workers` daemon threads: what each returned or raised within `limit` s.

    A call unanswered at the limit gets a TimeoutError; its thread ends with its socket's timeout (or
    never, on an answer that drips), and counts against `threads` until then: past its limit a call is
    not made (ProxmoxBusy), nor is a call to a node (`node_of(key)`) another call is still with. Once
    `abandoned` is set, no call starts.
    """
    todo, done, lock = list(calls.items()), {}, threading.Lock()
    threads = threads or Threads(workers)
    stop = abandoned or threading.Event()

    def work() -> None:
        try:
            while True:
                with lock:
                    if not todo or stop.is_set():
                        return
                    key, call = todo.pop()
                node = node_of(key)
                if not threads.hold(node):
                    result = ProxmoxBusy(f"an earlier call to node {node!r} is still not answered; not asking it again")
                else:
                    try:
                        result = call()
                    except Exception as exc:  # noqa: BLE001 - every failure is the caller's to judge
                        result = exc
                    finally:
                        threads.release(node)
                with lock:
                    done[key] = result
        finally:
            threads.give()

    started = [threading.Thread(target=work, name="proxmox-extra", daemon=True)
               for _ in range(threads.take(min(workers, len(todo))))]
    end = time.monotonic() + limit
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(max(end - time.monotonic(), 0))
    with lock:
        todo.clear()  # not started by now: never
        missing = TimeoutError(f"no answer within {limit:g} s") if started else \
            ProxmoxBusy(f"{threads.live} earlier calls to Proxmox are still not answered; not asking")
        return {key: done.get(key, missing) for key in calls}
