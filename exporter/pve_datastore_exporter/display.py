"""What this process shows: the last view, the store's generation it came from, and who renders it."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from .records import View

log = logging.getLogger(__name__)

UNREAD = -1  # the generation of a view shown while the database cannot be read: any later load is newer

# (view, event): event "load", "refresh", "defaults", "role", "risk" (a per-node read stored: node_reads.py),
# or "fenced" (a stale leader's write refused)
Subscriber = Callable[[View, str], None]


class Display:
    """The view every answer and /metrics are built from, handed to each subscriber when it changes.

    A write and the publication of its view happen under `publishing`, so that a default changed
    meanwhile is never overwritten by an older view. `changed` wakes whoever waits for another
    process's outcome (a follower's refresh). `generation` is the store's generation the view shows:
    a larger one committed elsewhere is loaded by `follow`.
    """

    def __init__(self, store, view: View, role: Callable[[], str], cluster: Callable[[str], str],
                 complete: Callable[[View], View], own: Callable[[View], None] = lambda stored: None):
        self._store = store
        self._own = own  # service.Service._own_cluster: raises unless a stored view is this cluster's
        self._role = role  # the coordinator's: "leader" or "follower"
        self._cluster = cluster  # reader.Reader.name: the cluster's name, given the one a view carries
        self._complete = complete  # service.Fallback.complete: the .env defaults where the store has none
        self._subscribers: list[Subscriber] = []
        self.view = view  # the last view published
        self.shown = view  # the last view every subscriber took
        self.generation = 0
        self.publishing = threading.RLock()
        self.changed = threading.Condition()

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber(view, event)` now and on every change."""
        self._subscribers.append(subscriber)
        subscriber(self.view, "load")

    def publish(self, view: View, event: str, generation: int | None = None) -> Exception | None:
        """Show `view` (of the store's `generation`, when a write or a load made it): the first subscriber's error, or None."""
        if generation is not None:
            self.generation = generation
        view = dataclasses.replace(view, cluster=self._cluster(view.cluster), role=self._role())
        self.view, error = view, None
        for subscriber in self._subscribers:
            try:
                subscriber(view, event)
            except Exception as exc:  # noqa: BLE001 - one subscriber's bug must not keep the view from the others
                log.exception("a subscriber failed on the %s view", event)
                error = error or exc
        if error is None:
            self.shown = view
        return error

    def present(self, stored: View) -> View:
        """A view the store holds, with what only this process knows: the last refresh's outcome, the name, the role.

        The refresh's outcome is the one in memory: a failure the database could not take (read-only,
        full, away) is known here only, and the answers must tell it.
        """
        return dataclasses.replace(stored, refresh=self.view.refresh, cluster=self.view.cluster, role=self._role())

    def read(self) -> View:
        """What the database holds now, as this process shows it (StoreError when it cannot be read).

        After the `.env` fallback was shown, the first view read is published again, so that
        /metrics says `source="db"` as soon as the answers do.
        """
        generation, stored = self._store.load()
        self._own(stored)
        view = self._complete(self.present(stored))
        if self.generation == UNREAD:
            with self.publishing:
                if self.generation == UNREAD:
                    self.publish(view, "load", generation)
        return view

    def fall_back(self, view: View) -> None:
        """Show `view`, the `.env` fallback's, while the database cannot be read: /metrics says what the answers say."""
        if self.view.source == view.source and self.generation == UNREAD:
            return  # already shown: a GET while the database is away re-renders nothing
        with self.publishing:
            self.publish(view, "load", UNREAD)

    def follow(self, generation: int) -> None:
        """Show what another process committed: reload when the store's `generation` is not the one shown."""
        if generation == self.generation:
            return
        with self.publishing:
            if generation == self.generation:  # this process's own write, published while we waited for the lock
                return
            generation, view = self._store.load()
            if generation == self.generation:
                return
            self._own(view)  # another cluster's datastores are never shown under this one's name
            event = "refresh" if view.refresh != self.view.refresh else "defaults"
            self.publish(self._complete(view), event, generation)
        self._wake()  # a follower's refresh waits for the leader's outcome

    def announce_role(self) -> None:
        """Publish the view again: this replica started or stopped leading."""
        with self.publishing:
            self.publish(self.view, "role")
        self._wake()  # a follower's refresh that found no leader may now be this replica's

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds after a followed change or a new role; False after `timeout` s."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout=timeout)

    def _wake(self) -> None:
        with self.changed:
            self.changed.notify_all()
