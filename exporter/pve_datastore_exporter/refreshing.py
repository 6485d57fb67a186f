"""Refreshes, one at a time: the leader reads Proxmox and stores a snapshot, a follower asks the leader."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from .coordination import MAX_BACKOFF, TICK, NotLeader
from .records import RefreshFailed, RefreshInfo, View
from .store import Fenced, ForeignCluster, StoreError

log = logging.getLogger(__name__)

# s between a follower's requests while no answer comes: the leader's listening session, if it was
# reconnecting when the last one was sent, is back within MAX_BACKOFF and listens within a TICK.
ASK_AGAIN = MAX_BACKOFF + 2 * TICK


class Refresher:
    """Runs a refresh for whoever asks; concurrent callers share the one in progress.

    What a refresh stores or fails with is published through `display`; a failure is recorded in
    the database too, so that every replica shows it. docs/architecture.md#replicas tells a
    follower's side.
    """

    def __init__(self, config, reader, store, display, coordinator, fallback,
                 clock: Callable[[], float] = time.time):
        self._deadline = config.refresh_deadline
        self._reader, self._store, self._display = reader, store, display
        self._coordinator, self._fallback, self._clock = coordinator, fallback, clock
        self._cond = threading.Condition()
        self._running = False
        self._finished = 0  # refreshes this process ran to the end: a waiter sees its refresh end
        self._last_error: RefreshFailed | None = None
        self._fence = None  # the epoch of the lock this refresh's read was made under: its writes carry it

    @property
    def running(self) -> bool:
        """True while this process runs a refresh."""
        return self._running

    def refresh(self) -> int:
        """Fetch and store a snapshot; the count of enabled datastores; RefreshFailed on any failure."""
        if not self._coordinator.leads():
            return self._through_the_leader()
        with self._cond:
            if self._running:
                return self._wait_for_running()
            self._running = True
        error, started = None, self._clock()
        try:
            return self._refresh(started)
        except RefreshFailed as exc:
            error = exc
            raise
        except Exception as exc:  # noqa: BLE001 - a bug anywhere in a refresh is a counted failure, never a 500
            log.exception("refresh crashed")
            error = self._fail(started, "internal", f"unexpected error during the refresh: {exc}")
            raise error from None
        finally:
            with self._cond:
                self._running = False
                self._finished += 1
                self._last_error = error
                self._cond.notify_all()

    def _wait_for_running(self) -> int:
        # Called with self._cond held. The read of Proxmox ends by its deadline; 10 s more for the DB.
        finished, limit = self._finished, self._deadline + 10
        if not self._cond.wait_for(lambda: self._finished != finished, timeout=limit):
            raise RefreshFailed("timeout", f"the refresh in progress did not end within {limit} s")
        if self._last_error:
            raise self._last_error
        return len(self._display.view.enabled)

    def _refresh(self, started: float) -> int:
        self._fence = None
        try:
            with self._coordinator.reading(self._deadline) as self._fence:  # fenced: see coordination.py
                datastores = self._reader.read(self._fence)
        except NotLeader as exc:  # not recorded: the bookkeeping is the leader's to write
            raise RefreshFailed("db", str(exc)) from None
        except RefreshFailed as exc:
            raise self._fail(started, exc.reason, str(exc)) from None
        with self._display.publishing:  # a default change published meanwhile is not overwritten
            try:
                generation, view = self._store.replace_snapshot(
                    datastores, self._fallback.initial(), self._fallback.system(),
                    lambda: self._next(started, None, None), self._reader.cluster, self._fence, self._reader.label)
            except Fenced as exc:  # not recorded either: the bookkeeping is the new leader's now
                raise self._refused(exc) from None
            except ForeignCluster as exc:  # another cluster's datastores: never written over, nor shown as ours
                raise self._foreign(started, exc) from None
            except StoreError as exc:
                raise self._fail(started, "db", f"database write failed: {exc}", self._unsaved(datastores)) from None
            except Exception as exc:  # noqa: BLE001 - e.g. the driver refusing a value: a failure, not a crash
                log.exception("storing the refresh crashed")
                raise self._fail(started, "internal", f"unexpected error while storing: {exc}",
                                 self._unsaved(datastores)) from None
            # The per-node reads' figures are not the snapshot's: shown as the last one of them stored them.
            view = dataclasses.replace(view, risk=self._display.view.risk)
            failed = self._settle(self._fallback.complete(view), generation)
        if failed:
            raise failed
        return len(view.enabled)

    def _next(self, started: float, reason: str | None, error: str | None, fetched: bool = True) -> RefreshInfo:
        """The bookkeeping after this refresh: `fetched` when Proxmox answered, even if the DB did not."""
        now, old = self._clock(), self._display.view.refresh
        return RefreshInfo(last_attempt=now, last_success=now if fetched else old.last_success,
                           ok=reason is None, error=error, reason=reason, duration=now - started,
                           count=old.count + 1)

    def _unsaved(self, datastores) -> View:
        """Fresh datastores the DB could not take, with the DB's defaults if it can still be read."""
        rows = tuple(sorted(datastores, key=lambda d: d.id))
        try:
            stored = self._display.read()
        except StoreError:
            # Named by the read that found them: the DB holds no name this process could show.
            shown = dataclasses.replace(self._display.present(View()), rows=rows, cluster=self._reader.cluster,
                                        risk=self._display.view.risk)
            return self._fallback.instead(shown)
        return dataclasses.replace(stored, rows=rows).flagged(stored.default_hdd, stored.default_ssd)

    def _fail(self, started: float, reason: str, message: str, unsaved: View | None = None) -> RefreshFailed:
        """Record and publish a failed refresh (with the fresh data when only the DB failed); the error to raise."""
        failed = RefreshFailed(reason, message)  # its message encodable and short
        with self._display.publishing:
            info = self._next(started, reason, str(failed), fetched=unsaved is not None)
            log.warning("refresh failed (%s): %r", reason, str(failed))
            generation = self._record(info)
            return self._settle(dataclasses.replace(unsaved or self._display.view, refresh=info), generation) or failed

    def _foreign(self, started: float, exc: ForeignCluster) -> RefreshFailed:
        """A snapshot refused because the database holds another cluster's: a failure ("db"), their rows not shown."""
        log.error("%s", exc)
        ours = dataclasses.replace(self._display.present(View()), cluster=self._reader.cluster)
        self._display.fall_back(self._fallback.instead(ours))
        return self._fail(started, "db", str(exc))  # its bookkeeping is not stored either (ForeignCluster again)

    def _refused(self, exc: Fenced) -> RefreshFailed:
        """A write the store refused to a replica that had lost the lead: logged, counted (pve_datastore_fenced_writes_total)."""
        log.warning("refused to store a refresh: %s", exc)
        self._display.publish(self._display.view, "fenced")
        return RefreshFailed("db", str(exc))

    def _settle(self, view: View, generation: int | None) -> RefreshFailed | None:
        """Publish a refresh's outcome; if a subscriber fails on it, the view all of them took, as a failed refresh."""
        error = self._display.publish(view, "refresh", generation)
        if error is None:
            return None
        # The store may have committed, but /metrics still shows the last view: its age and up=0 say so.
        failed = RefreshFailed("internal", f"publishing the refresh failed: {error!r}")
        shown = self._display.shown
        info = dataclasses.replace(view.refresh, ok=False, reason="internal", error=str(failed),
                                   last_success=shown.refresh.last_success)
        log.warning("refresh failed (internal): %r", str(failed))
        self._display.publish(dataclasses.replace(shown, refresh=info), "refresh", self._record(info))
        return failed

    def _record(self, info: RefreshInfo) -> int | None:
        """Store a refresh's bookkeeping; the generation it committed, None when the DB did not take it."""
        try:
            # A reader that never learned the name (a one-shot `refresh` whose read failed) keeps the stored one.
            return self._store.record_refresh(info, self._reader.known(), self._fence, self._reader.label)
        except Fenced as exc:
            self._refused(exc)
            return None
        except Exception as exc:  # noqa: BLE001 - the bookkeeping is kept in memory anyway; the next refresh retries
            log.debug("could not record the refresh: %r", exc)
            return None

    def _through_the_leader(self) -> int:
        """A follower's refresh: the leader refreshes now, and the outcome it stores is the answer.

        The request is a NOTIFY, lost if the leader's listening session is reconnecting: it is sent
        again every ASK_AGAIN s until the answer comes (concurrent requests share one refresh).
        """
        limit = 2 * self._deadline + 10  # a new leader may first wait out the last one's read
        try:
            asked_at, before = self._store.refresh_state()
            self._store.ask_for_refresh()
        except StoreError as exc:
            raise RefreshFailed("db", f"the leader cannot be asked through the database: {exc}") from None

        def done() -> bool:
            after = self._display.view.refresh
            return self._display.generation > asked_at and (
                (after.last_attempt, after.count) != (before.last_attempt, before.count))

        give_up = time.monotonic() + limit
        while not self._display.wait(lambda: done() or self._coordinator.leads(),
                                     min(ASK_AGAIN, give_up - time.monotonic())):
            if time.monotonic() >= give_up:
                raise RefreshFailed("timeout", f"no replica stored a refresh within {limit} s of asking")
            with contextlib.suppress(StoreError):  # the database away: the wait above ends it
                self._store.ask_for_refresh()
        view = self._display.view  # one snapshot: a later follow must not mix into the answer
        if not done():  # there was no leader to ask: this replica took the lead meanwhile
            return self.refresh()
        if not view.refresh.ok:
            raise RefreshFailed(view.refresh.reason or "internal", view.refresh.error or "the leader's refresh failed")
        return len(view.enabled)
