"""The seed's behaviour: list, refresh, set defaults, and fall back to `.env` when the DB fails."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from .config import Config
from .coordination import NotLeader, Solo
from .following import Following
from .proxmox import Reader
from .records import RefreshFailed, RefreshInfo, View
from .store import Store, StoreError, UnknownDatastore

log = logging.getLogger(__name__)

Listener = Callable[[View, str], None]  # (view, event): event "load", "refresh", "defaults" or "role"


class Service(Following):
    """Everything the API, the page and the metrics need, over one store and one reader."""

    def __init__(self, config: Config, reader=None, store=None, clock: Callable[[], float] = time.time,
                 coordinator=None):
        self.config = config
        self._reader = reader or Reader(config)
        self._store = store or Store(config.database_url)
        self._coordinator = coordinator or Solo()  # who reads Proxmox among replicas (coordination.py)
        self._seen = 0  # the store's generation this view shows
        self._clock = clock
        self._listeners: list[Listener] = []
        self._view = View(default_hdd=config.hdd_datastore, default_ssd=config.ssd_datastore, source="env",
                          cluster=self._reader.cluster)
        self._shown = self._view  # the last view every listener took
        self._known_defaults: dict[str, str] = {}
        self._cond = threading.Condition()
        self._running = False
        self._generation = 0
        self._last_error: RefreshFailed | None = None
        self._first_fetch = True  # the seed's "first call fetches", claimed by one GET only
        self._publishing = threading.RLock()  # a write and the publication of its view, as one

    @property
    def view(self) -> View:
        """The in-memory view: what metrics are rendered from."""
        return self._view

    @property
    def role(self) -> str:
        """"leader" when this process reads Proxmox, "follower" when another replica does."""
        return self._coordinator.role

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(view, event)` now and on every change."""
        self._listeners.append(listener)
        listener(self._view, "load")

    def start(self) -> None:
        """Create or upgrade the schema and load what the DB holds; a broken DB is logged, not fatal."""
        try:
            self._store.migrate()
            self._seen, view = self._store.load()  # its refresh bookkeeping tells the data's age after a restart
            self._remember(view)
            self._publish(view, "load")
        except StoreError as exc:
            log.error("database unusable at start, answering with .env defaults: %r", exc)

    def init_db(self) -> None:
        """Create or upgrade the schema; errors are raised, not logged (the `init-db` command)."""
        self._store.migrate()

    def datastores(self) -> View:
        """The seed's GET: the DB's view; the first call on an empty DB fetches from Proxmox."""
        try:
            # Once: one GET may fetch, the others answer at once; a cluster that is down must not
            # hold every GET (and every HTTP thread) for a timeout.
            with self._cond:
                first, self._first_fetch = self._first_fetch and not self._running, False
            if first and self._coordinator.leads() and self._view.refresh.last_attempt is None and self._store.is_empty():
                with contextlib.suppress(RefreshFailed):  # logged and counted by the refresh itself
                    self.refresh()
            return self._load()
        except StoreError as exc:
            log.warning("database unreadable, answering with .env defaults: %r", exc)
            return self._env_view(self._view)

    def defaults(self) -> View:
        """The current defaults, from the DB or, failing that, from `.env`."""
        try:
            return self._load()
        except StoreError:
            return self._env_view(self._view)

    def refresh(self) -> int:
        """Fetch and store a snapshot; concurrent callers share the one in progress; a follower asks the leader."""
        if not self._coordinator.leads():
            return self._refresh_elsewhere()
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
                self._generation += 1
                self._last_error = error
                self._cond.notify_all()

    def _wait_for_running(self) -> int:
        # Called with self._cond held. The read of Proxmox ends by its deadline; 10 s more for the DB.
        generation, limit = self._generation, self.config.refresh_deadline + 10
        if not self._cond.wait_for(lambda: self._generation != generation, timeout=limit):
            raise RefreshFailed("timeout", f"the refresh in progress did not end within {limit} s")
        if self._last_error:
            raise self._last_error
        return len(self._view.enabled)

    def _refresh(self, started: float) -> int:
        try:
            with self._coordinator.reading(self.config.refresh_deadline):  # fenced: see coordination.py
                datastores = self._reader.read()
        except NotLeader as exc:  # not recorded: the bookkeeping is the leader's to write
            raise RefreshFailed("db", str(exc)) from None
        except RefreshFailed as exc:
            raise self._fail(started, exc.reason, str(exc)) from None
        system = {"hdd": self.config.hdd_datastore, "ssd": self.config.ssd_datastore}
        # The .env values only start the defaults; after a lost DB file the last known ones come back.
        initial = {**system, **self._known_defaults}
        with self._publishing:  # a default change published meanwhile is not overwritten
            try:
                view = self._store.replace_snapshot(datastores, initial, system,
                                                    lambda: self._next_refresh(started, None, None),
                                                    self._reader.cluster)
                self._seen = self._store.generation
            except StoreError as exc:
                raise self._fail(started, "db", f"database write failed: {exc}", self._unsaved_view(datastores)) from None
            except Exception as exc:  # noqa: BLE001 - e.g. the driver refusing a value: a failure, not a crash
                log.exception("storing the refresh crashed")
                raise self._fail(started, "internal", f"unexpected error while storing: {exc}",
                                 self._unsaved_view(datastores)) from None
            failed = self._settle(self._with_fallback(view))
        if failed:
            raise failed
        return len(view.enabled)

    def _next_refresh(self, started: float, reason: str | None, error: str | None,
                      fetched: bool = True) -> RefreshInfo:
        """The bookkeeping after this refresh: `fetched` when Proxmox answered, even if the DB did not."""
        now, old = self._clock(), self._view.refresh
        return RefreshInfo(last_attempt=now, last_success=now if fetched else old.last_success,
                           ok=reason is None, error=error, reason=reason, duration=now - started,
                           count=old.count + 1)

    def _unsaved_view(self, datastores) -> View:
        """Fresh datastores the DB could not take, with the DB's defaults if it can still be read."""
        rows = tuple(sorted(datastores, key=lambda d: d.id))
        try:
            stored = self._load()
        except StoreError:
            return self._env_view(View(rows=rows))
        return dataclasses.replace(stored, rows=tuple(
            dataclasses.replace(d, is_default_hdd=d.id == stored.default_hdd,
                                is_default_ssd=d.id == stored.default_ssd) for d in rows))

    def _fail(self, started: float, reason: str, message: str, unsaved: View | None = None) -> RefreshFailed:
        """Record and publish a failed refresh (with the fresh data when only the DB failed); the error to raise."""
        failed = RefreshFailed(reason, message)  # its message encodable and short
        with self._publishing:
            info = self._next_refresh(started, reason, str(failed), fetched=unsaved is not None)
            log.warning("refresh failed (%s): %r", reason, str(failed))
            self._record(info)
            return self._settle(dataclasses.replace(unsaved or self._view, refresh=info)) or failed

    def _settle(self, view: View) -> RefreshFailed | None:
        """Publish a refresh's outcome; if a listener fails on it, the view all of them took, as a failed refresh."""
        error = self._publish(view, "refresh")
        if error is None:
            return None
        # The store may have committed, but /metrics still shows the last view: its age and up=0 say so.
        failed = RefreshFailed("internal", f"publishing the refresh failed: {error!r}")
        info = dataclasses.replace(view.refresh, ok=False, reason="internal", error=str(failed),
                                   last_success=self._shown.refresh.last_success)
        log.warning("refresh failed (internal): %r", str(failed))
        self._record(info)
        self._publish(dataclasses.replace(self._shown, refresh=info), "refresh")
        return failed

    def _record(self, info: RefreshInfo) -> None:
        try:
            self._store.record_refresh(info, self._reader.cluster)
            self._seen = self._store.generation
        except Exception as exc:  # noqa: BLE001 - the bookkeeping is kept in memory anyway; the next refresh retries
            log.debug("could not record the refresh: %r", exc)

    def set_defaults(self, hdd: str | None = None, ssd: str | None = None) -> tuple[View, bool]:
        """Change the default HDD and/or SSD datastore; raise UnknownDatastore or StoreError."""
        with self._publishing:
            changed = self._store.set_defaults(hdd=hdd, ssd=ssd)
            self._seen = self._store.generation
            view = self._load()
            self._publish(view, "defaults")
        log.info("defaults set: hdd=%r ssd=%r (changed=%s)", view.default_hdd, view.default_ssd, changed)
        return view, changed

    def _load(self) -> View:
        return self._with_fallback(dataclasses.replace(self._store.view(), refresh=self._view.refresh,
                                                       cluster=self._view.cluster, role=self.role))

    def _with_fallback(self, view: View) -> View:
        self._remember(view)
        if view.default_hdd is None or view.default_ssd is None:
            # No default stored yet (Proxmox never answered): the .env values stand in, and say so.
            return dataclasses.replace(view, default_hdd=view.default_hdd or self.config.hdd_datastore,
                                       default_ssd=view.default_ssd or self.config.ssd_datastore, source="env")
        return view

    def _remember(self, view: View) -> None:
        # The last defaults the DB held: restored if the DB file is deleted under us.
        self._known_defaults = {k: v for k, v in (("hdd", view.default_hdd), ("ssd", view.default_ssd)) if v}

    def _env_view(self, view: View) -> View:
        hdd, ssd = self.config.hdd_datastore, self.config.ssd_datastore
        rows = tuple(dataclasses.replace(r, is_default_hdd=r.id == hdd, is_default_ssd=r.id == ssd)
                     for r in view.rows)
        return dataclasses.replace(view, rows=rows, default_hdd=hdd, default_ssd=ssd, source="env",
                                   refresh=self._view.refresh, role=self.role)

    def _publish(self, view: View, event: str) -> Exception | None:
        """Hand `view` to every listener; the first one's error (logged), or None when all of them took it."""
        # The name the reader last knew; a follower's reader never reads: it takes the one the leader stored.
        cluster = self.config.proxmox_cluster_name or view.cluster or self._reader.cluster
        view = dataclasses.replace(view, cluster=cluster, role=self.role)
        self._view, error = view, None
        for listener in self._listeners:
            try:
                listener(view, event)
            except Exception as exc:  # noqa: BLE001 - one listener's bug must not keep the view from the others
                log.exception("a listener failed on the %s view", event)
                error = error or exc
        if error is None:
            self._shown = view
        return error

    def age(self) -> float | None:
        """Seconds since the last successful refresh, or None if there never was one."""
        last = self._view.refresh.last_success
        return None if last is None else max(self._clock() - last, 0.0)


def default_warnings(view: View) -> list[str]:
    """Sentences about defaults that point nowhere useful; the answers carry them."""
    found = []
    for role, datastore_id in (("HDD", view.default_hdd), ("SSD", view.default_ssd)):
        if not datastore_id:
            found.append(f"no default {role} datastore is set")
            continue
        row = view.row(datastore_id)
        if row is None or row.type == "unknown" and not row.nodes:
            found.append(f"default {role} datastore '{datastore_id}' does not exist in the cluster")
        elif not row.enabled:
            found.append(f"default {role} datastore '{datastore_id}' is disabled or gone from the cluster")
        elif not row.active:
            found.append(f"default {role} datastore '{datastore_id}' is not active on any node")
    return found


# The store's errors are named here too: web and cli talk to the service, never to the store.
__all__ = ["Service", "StoreError", "UnknownDatastore", "default_warnings"]
