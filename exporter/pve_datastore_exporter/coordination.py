"""Which replica reads Proxmox, and how every change reaches every replica (docs/architecture.md#replicas).

The leader is the replica whose own database session holds the lock (store/leader.py); only it
reads Proxmox. Each read is fenced: before it, the leader marks in the database, through that
session, until when the read may run; after it, it clears the mark through the same session. A
session that ended in between means another replica may lead: the read is thrown away. A replica
that takes the lock first waits out the last leader's mark, so two reads never overlap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from .config import Config, ConfigError
from .store import AlreadyServed, HeldLock, NoSignals, SessionError, StoreError, is_sqlite, open_coordination
from .store.notify import CHANGES, REFRESH

log = logging.getLogger(__name__)

MARGIN = 2.0  # s added to a read's mark; a mark whose answer takes half of it is not trusted
TICK = 0.5  # s between looks: notifications, attempts at the lock
HEARTBEAT = 1.0  # s between a leader's checks of its lock's session
SAFETY_CHECK = 2.0  # s between reads of the generation when no notification came
MAX_BACKOFF = 4.0  # s at most between attempts to reopen a session


class NotLeader(Exception):
    """This replica does not hold the lock, or lost it during the read: it must not read, or use what it read."""


def _nothing() -> None:
    """What a duty nobody gave does."""


class Coordinator:
    """Leads while its lock is held and follows every change, in one daemon thread beside the server."""

    def __init__(self, lock, signals, clock: Callable[[], float] = time.monotonic, tick: float = TICK):
        self._lock, self._signals, self._clock, self._tick = lock, signals, clock, tick
        self._leading = False
        self._role_lock = threading.Lock()  # the loop takes the role, a refresh thread may give it up
        self._reading = threading.Lock()  # guards the one mark the database holds, never held across a read
        self._readers = 0  # reads under way in this process (the refresh's and the per-node reads' batches)
        self._marked_until = 0.0  # when the database's mark ends, on our clock: it covers every read under way
        self._ready_at = 0.0  # a new leader reads from then on: the last leader's read has ended
        self._prepared = True  # Service.start() made the schema; after a failure it is made again first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coordination", daemon=True)
        self._prepare = self._role_changed = self._refresh_now = self._took_lead = _nothing
        self._follow: Callable[[int], None] = lambda generation: None
        self._alone = False  # alone(): no loop to run
        self._retry = {"lock": 0.0, "signals": 0.0}  # when to try a session again
        self._failures = {"lock": 0, "signals": 0}
        self._due = {"heartbeat": 0.0, "generation": 0.0}

    @classmethod
    def alone(cls) -> Coordinator:
        """A process that leads alone and hears nobody: `list` and `set-default`, `refresh` on SQLite, and the tests."""
        coordinator = cls(HeldLock(), NoSignals())
        coordinator._leading = coordinator._alone = True
        return coordinator

    @property
    def role(self) -> str:
        """"leader" or "follower", as the answers and pve_datastore_leader say."""
        return "leader" if self._leading else "follower"

    def leads(self) -> bool:
        """True while this replica holds the lock."""
        return self._leading

    def start(self, prepare: Callable[[], None], follow: Callable[[int], None], role_changed: Callable[[], None],
              refresh_now: Callable[[], None] = _nothing, took_lead: Callable[[], None] = _nothing) -> None:
        """Try to lead at once (a lone replica leads from its first second), then loop in a thread.

        `prepare` makes the schema (the lock's table) before the lock is tried again after a failure;
        `follow(generation)` shows what another process committed; `role_changed` runs when this
        replica starts or stops leading; `refresh_now` answers a follower's request; `took_lead` runs
        when this replica takes the lead.
        """
        self._prepare, self._follow, self._role_changed = prepare, follow, role_changed
        self._refresh_now, self._took_lead = refresh_now, took_lead
        if self._alone:
            return
        self._lead_or_check()
        self._thread.start()

    def stop(self) -> None:
        """End the loop and the sessions: the lock is released at once, for another replica to take."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._lock.release()
        self._signals.close()

    def epoch(self) -> int | None:
        """The fence a write that follows no read carries (None for a lone process); NotLeader unless this replica leads.

        No mark is made: no Proxmox call is fenced by it, and a mark without a read would only delay a hand-over.
        """
        if not self._leading:
            raise NotLeader("another replica leads")
        return getattr(self._lock, "epoch", None)

    @contextlib.contextmanager
    def reading(self, seconds: float):
        """Around one read of Proxmox that ends within `seconds`: NotLeader before it, or after it, without the lock.

        It yields the fence of the writes that store the read: the epoch the lock was taken with
        (None for a lone process), which the store checks inside each write's transaction. The refresh
        and the per-node reads' batches (node_reads.py) overlap: the database's one mark is extended to
        cover the longest read under way and cleared by the last one, so neither waits for the other.
        """
        fence = getattr(self._lock, "epoch", None)  # a lock that fences nothing has none
        if not self._leading:
            raise NotLeader("another replica leads: it reads Proxmox")
        if self._stop.wait(max(self._ready_at - self._clock(), 0.0)):
            raise NotLeader("stopping")
        self._begin(seconds)
        try:
            yield fence
        finally:
            self._end()

    def _begin(self, seconds: float) -> None:
        with self._reading:
            started = self._clock()
            if self._readers == 0 or started + seconds + MARGIN > self._marked_until:
                try:
                    self._lock.begin_read(seconds + MARGIN)
                except SessionError as exc:
                    raise NotLeader(self._step_down(exc)) from None
                if self._clock() - started > MARGIN / 2:
                    # The mark's clock may have started long before its answer came: the read could outlast it.
                    raise NotLeader(f"the database took {self._clock() - started:.1f} s to mark the read")
                self._marked_until = started + seconds + MARGIN
            self._readers += 1

    def _end(self) -> None:
        with self._reading:
            self._readers -= 1
            try:
                if self._readers == 0:
                    self._lock.end_read()
                else:  # another read goes on under the mark: only ask whether the lock was kept throughout
                    self._lock.check()
            except SessionError as exc:
                raise NotLeader(self._step_down(exc) + "; the read is dropped") from None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._lead_or_check()
            self._listen()

    def _lead_or_check(self) -> None:
        now = self._clock()
        if now < self._retry["lock"] or (self._leading and now < self._due["heartbeat"]):
            return
        try:
            if self._leading:
                self._lock.check()
                self._due["heartbeat"] = now + HEARTBEAT
            else:
                self._try_to_lead()
            self._recovered("lock")
        except (SessionError, StoreError) as exc:
            self._prepared = False
            self._step_down(exc)
            self._back_off("lock", exc)

    def _try_to_lead(self) -> None:
        if not self._prepared:  # the lock's bookkeeping lives in a table: the database may be new or back
            self._prepare()  # StoreError: the database is away, as SessionError would say
            self._prepared = True
        grace = self._lock.try_acquire()
        if grace is None:
            return
        with self._role_lock:
            self._ready_at, self._leading = self._clock() + grace, True
        log.info("leading: this replica reads Proxmox%s",
                 f" once the last leader's read has ended ({grace:.1f} s)" if grace else "")
        self._role_changed()
        self._took_lead()

    def _step_down(self, exc: Exception) -> str:
        """Follow from now on; the reason, for the log and the error."""
        reason = f"this replica no longer leads ({exc})"
        with self._role_lock:
            was_leading, self._leading = self._leading, False
        if was_leading:
            log.warning("%s: another replica may take over", reason)
            self._lock.release()
            self._role_changed()
        return reason

    def _listen(self) -> None:
        now = self._clock()
        if now < self._retry["signals"]:
            self._stop.wait(self._tick)
            return
        try:
            heard = self._signals.wait(self._tick)
            if self._leading and any(channel == REFRESH for channel, _ in heard):
                self._refresh_now()  # a follower's POST /api/datastores/refresh
            told = [payload for channel, payload in heard if channel == CHANGES]
            said = [int(payload) for payload in told if payload.isdigit()]  # NOTIFY's payload: the generation committed
            if now >= self._due["generation"] or len(said) < len(told):  # a reconnect says no number
                self._due["generation"] = now + SAFETY_CHECK
                self._follow(self._signals.generation())
            elif said:
                self._follow(max(said))
            self._recovered("signals")
        except SessionError as exc:
            self._back_off("signals", exc)
        except StoreError as exc:  # the view could not be read: the next check tries again
            log.debug("could not reload the view: %r", exc)

    def _back_off(self, name: str, exc: Exception) -> None:
        self._failures[name] += 1
        delay = min(TICK * 2 ** (self._failures[name] - 1), MAX_BACKOFF)
        self._retry[name] = self._clock() + delay
        if self._failures[name] == 1:
            log.warning("%s: %s; trying again every few seconds", name, exc)

    def _recovered(self, name: str) -> None:
        if self._failures[name]:
            log.info("%s: the database answers again", name)
        self._failures[name] = 0


def for_command(config: Config) -> Coordinator:
    """The `refresh` command's: on PostgreSQL it leads if no replica does, else the leader refreshes for it.

    On SQLite it reads alone, as it always did, even beside a `serve` (one more read, never a lasting one).
    """
    if is_sqlite(config.database_url):
        return Coordinator.alone()
    return for_serving(config)


def for_serving(config: Config) -> Coordinator:
    """The coordinator of a `serve` process; ConfigError when another one serves its SQLite file."""
    holder = f"{socket.gethostname()} pid {os.getpid()} ({config.listen_address})"
    try:
        lock, signals = open_coordination(config.database_url, holder)
    except AlreadyServed as exc:
        raise ConfigError(f"DATABASE_URL: {exc}") from None
    return Coordinator(lock, signals)
