"""The seed's behaviour: list, refresh, set defaults, and fall back to `.env` when the DB fails."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable

from .config import Config, ConfigError
from .coordination import Coordinator
from .display import Display, Subscriber
from .node_reads import NodeReads
from .reader import Reader
from .records import RefreshFailed, View
from .refreshing import Refresher
from .store import DatabaseAway, ForeignCluster, Store, StoreError, UnknownDatastore

log = logging.getLogger(__name__)


class Fallback:
    """The `.env` defaults: the first defaults of a new database, and what stands in when it holds none or is away."""

    def __init__(self, config: Config):
        self._system = {"hdd": config.hdd_datastore, "ssd": config.ssd_datastore}
        self._known: dict[str, str] = {}  # the last defaults the DB held: restored if the DB file is deleted under us

    def system(self) -> dict[str, str]:
        """PROXMOX_HDD/SSD_DATASTORE by kind ("hdd", "ssd")."""
        return dict(self._system)

    def initial(self) -> dict[str, str]:
        """The defaults a snapshot flags where no row carries one: the last ones known, else `.env`'s."""
        return {**self._system, **self._known}

    def remember(self, view: View) -> None:
        """Keep the defaults `view` holds, for a database that loses them."""
        self._known = {k: v for k, v in (("hdd", view.default_hdd), ("ssd", view.default_ssd)) if v}

    def complete(self, view: View) -> View:
        """`view` as the store holds it; where it has no default yet (Proxmox never answered), `.env`'s, said so."""
        self.remember(view)
        if view.default_hdd is None or view.default_ssd is None:
            return dataclasses.replace(view, default_hdd=view.default_hdd or self._system["hdd"],
                                       default_ssd=view.default_ssd or self._system["ssd"], source="env")
        return view

    def instead(self, view: View) -> View:
        """`view` with `.env`'s defaults in place of the database's, which cannot be read."""
        return dataclasses.replace(view, source="env").flagged(self._system["hdd"], self._system["ssd"])


class Service:
    """The seed's reads and writes over one store and one reader; a Display shows them, a Refresher refreshes."""

    def __init__(self, config: Config, reader=None, store=None, clock: Callable[[], float] = time.time,
                 coordinator=None):
        self.config = config
        self._reader = reader or Reader(config)
        self._store = store or Store(config.database_url)
        self._coordinator = coordinator or Coordinator.alone()  # who reads Proxmox among replicas
        self._clock = clock
        self._fallback = Fallback(config)
        initial = View(default_hdd=config.hdd_datastore, default_ssd=config.ssd_datastore, source="env",
                       cluster=self._reader.cluster)
        self.display = Display(self._store, initial, role=lambda: self._coordinator.role, cluster=self._reader.name,
                               complete=self._fallback.complete, own=self._own_cluster)
        self._foreign_seen = ""  # the other cluster's name last logged: said once, not on every GET
        self._refresher = Refresher(config, self._reader, self._store, self.display, self._coordinator,
                                    self._fallback, clock)
        # The thin pools, zpools, disks and provisioned space, each on its cadence (the leader's; serve starts it).
        self.node_reads = NodeReads(config, self._reader, self._store, self.display, self._coordinator.leads,
                                    self._coordinator.reading, self._coordinator.epoch, clock)
        self._first_fetch = True  # the seed's "first call fetches", claimed by one GET only
        self._boot = secrets.token_hex(4)  # a restart may answer otherwise (its .env): its tags are new
        self._first_lock = threading.Lock()

    @property
    def view(self) -> View:
        """The view last published: what metrics are rendered from."""
        return self.display.view

    @property
    def role(self) -> str:
        """"leader" when this process reads Proxmox, "follower" when another replica does."""
        return self._coordinator.role

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber(view, event)` now and on every change."""
        self.display.subscribe(subscriber)

    def start(self) -> None:
        """Create or upgrade the schema and load what the DB holds; a broken DB is logged, not fatal."""
        try:
            self._store.migrate()
            generation, view = self._store.load()  # its refresh bookkeeping tells the data's age after a restart
            self._own_cluster(view)
            self._fallback.remember(view)
            self.display.publish(view, "load", generation)
        except ForeignCluster as exc:  # two clusters' exporters on one database: `serve` stops with one line
            raise ConfigError(f"PROXMOX_CLUSTER_NAME: {exc}") from None
        except StoreError as exc:
            log.error("database unusable at start, answering with .env defaults: %r", exc)

    def _own_cluster(self, stored: View) -> None:
        """ForeignCluster (logged once per name) when a stored view names another cluster than ours.

        Ours: PROXMOX_CLUSTER_NAME, else the name this replica read from /cluster/status when it led.
        """
        configured = self.config.proxmox_cluster_name
        ours = configured or self._reader.known()
        if not ours or not stored.cluster or self._reader.label(stored.cluster) is not None:
            return
        named = f"PROXMOX_CLUSTER_NAME={ours!r}" if configured else f"{ours!r} (read from /cluster/status)"
        error = ForeignCluster(stored.cluster, named, "one database per cluster")
        if self._foreign_seen != stored.cluster:
            self._foreign_seen = stored.cluster
            log.error("%s; this replica shows none of them", error)
        raise error

    def init_db(self) -> None:
        """Create or upgrade the schema; errors are raised, not logged (the `init-db` command)."""
        self._store.migrate()

    def datastores(self) -> View:
        """The seed's GET: the DB's view; the first call on an empty DB fetches from Proxmox."""
        try:
            # Once: one GET may fetch, the others answer at once; a cluster that is down must not
            # hold every GET (and every HTTP thread) for a timeout.
            with self._first_lock:  # a refresh starting meanwhile is harmless: the claimed fetch joins it
                first, self._first_fetch = self._first_fetch and not self._refresher.running, False
            if first and self._coordinator.leads() and self.view.refresh.last_attempt is None and self._store.is_empty():
                with contextlib.suppress(RefreshFailed):  # logged and counted by the refresh itself
                    self.refresh()
            return self.display.read()
        except StoreError as exc:
            if not isinstance(exc, (DatabaseAway, ForeignCluster)):  # each said once, where it was found
                log.warning("database unreadable, answering with .env defaults: %r", exc)
            return self._unreadable()

    def defaults(self) -> View:
        """The current defaults, from the DB or, failing that, from `.env`."""
        try:
            return self.display.read()
        except StoreError:
            return self._unreadable()

    def _unreadable(self) -> View:
        """The `.env` fallback's view, shown everywhere (the answers and /metrics) until the database is read again."""
        view = self._fallback.instead(self.display.present(self.view))
        self.display.fall_back(view)
        return view

    def refresh(self) -> int:
        """Fetch and store a snapshot; concurrent callers share the one in progress; a follower asks the leader."""
        return self._refresher.refresh()

    def set_defaults(self, hdd: str | None = None, ssd: str | None = None) -> tuple[View, bool]:
        """Change the default HDD and/or SSD datastore; raise UnknownDatastore or StoreError."""
        with self.display.publishing:
            generation, changed = self._store.set_defaults(hdd=hdd, ssd=ssd)
            if changed and generation == self.display.generation + 1:  # the one write since the view shown
                self.display.publish(self.display.read(), "defaults", generation)
            else:  # nothing moved, or another process committed meanwhile: show what the database holds
                self.display.follow(generation)
            view = self.display.view
        log.info("defaults set: hdd=%r ssd=%r (changed=%s)", view.default_hdd, view.default_ssd, changed)
        return view, changed

    def version(self) -> str | None:
        """A tag of everything the answers are built from but the data's age; None when the DB cannot be read.

        The store's generation (every write raises it) and what this process adds to what it reads
        (display.present): the last refresh's outcome, the cluster's name, the role. Read before the
        answer it tags, so a tag is never newer than its answer. Costs one small query, not a load.
        """
        view = self.view
        if view.source == "env":  # the .env fallback shown: no tag, or a 304 would keep it past the DB's return
            return None
        try:
            generation = self._store.generation()
        except StoreError:
            return None
        made_of = repr((self._boot, generation, view.refresh, view.cluster, self.role)).encode()
        return hashlib.blake2b(made_of, digest_size=8).hexdigest()

    def age(self) -> float | None:
        """Seconds since the last successful refresh, or None if there never was one."""
        last = self.view.refresh.last_success
        return None if last is None else max(self._clock() - last, 0.0)


# The store's errors are named here too: http/app.py and cli talk to the service, never to the store.
__all__ = ["Service", "StoreError", "UnknownDatastore"]
