"""The background refresh loop: an interval with jitter, exponential backoff while Proxmox fails."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from .records import RefreshFailed

log = logging.getLogger(__name__)

MAX_BACKOFF_FACTOR = 8  # while failing, wait at most 8 intervals between tries


def next_delay(interval: float, failures: int, rand: float) -> float:
    """Seconds to the next refresh: interval x 2^failures (capped), with +-10 % jitter."""
    factor = min(2 ** failures, MAX_BACKOFF_FACTOR)
    # Jitter spreads many exporters' calls so a cluster's API does not see them in step.
    return interval * factor * (0.9 + 0.2 * rand)


class Poller:
    """Runs `service.refresh()` every `interval` seconds in a daemon thread until stopped, while `leads()`."""

    def __init__(self, service, interval: float, rand=random.random, leads: Callable[[], bool] = lambda: True):
        self._service = service
        self._interval = interval
        self._rand = rand
        self._leads = leads  # a follower leaves the refreshes to the leader (coordination.py)
        self._stop = threading.Event()
        self._wake = threading.Event()  # poke(): refresh now
        self._thread = threading.Thread(target=self._run, name="refresh", daemon=True)
        self.failures = 0

    def start(self) -> None:
        """Start the loop; the first refresh happens at once."""
        if self._interval > 0:
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to end and wait a little for it."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def poke(self) -> None:
        """Refresh now (a follower asked, or this replica took the lead); without a loop, in a thread."""
        if self._thread.is_alive():
            self._wake.set()
        elif not self._stop.is_set():
            threading.Thread(target=self.tick, name="refresh-now", daemon=True).start()

    def take_over(self) -> None:
        """This replica just took the lead: refresh now if refreshes are scheduled (not with interval 0)."""
        if self._interval > 0:
            self.poke()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # a poke before this tick is answered by it
            self.tick()
            self._wake.wait(next_delay(self._interval, self.failures, self._rand()))

    def tick(self) -> None:
        """One refresh if this replica leads; a failure only lengthens the wait before the next."""
        if not self._leads():
            return
        try:
            count = self._service.refresh()
            self.failures = 0
            log.debug("refreshed %d datastores", count)
        except RefreshFailed:
            self.failures += 1  # the service logged it and counted it
        except Exception:  # noqa: BLE001 - the loop must outlive any bug in one refresh
            self.failures += 1
            log.exception("refresh crashed")
