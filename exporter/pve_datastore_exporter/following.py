"""What a Service does among replicas: show what another process stored, and ask the leader to refresh.

A mixin of service.Service (its store, its view and its locks), kept apart so that the seed's
behaviour reads on its own; docs/architecture.md#replicas tells the whole story.
"""

from __future__ import annotations

from .records import RefreshFailed
from .store import StoreError


class Following:
    """Service's side of coordination.Coordinator: the calls its loop makes, and a follower's refresh."""

    def _refresh_elsewhere(self) -> int:
        """A follower's refresh: the leader refreshes now, and the outcome it stores is the answer."""
        limit = 2 * self.config.refresh_deadline + 10  # a new leader may first wait out the last one's read
        try:
            asked_at, before = self._store.refresh_state()
            self._store.ask_for_refresh()
        except StoreError as exc:
            raise RefreshFailed("db", f"the leader cannot be asked through the database: {exc}") from None

        def done() -> bool:
            after = self._view.refresh
            return self._seen > asked_at and (after.last_attempt, after.count) != (before.last_attempt, before.count)

        with self._cond:
            if not self._cond.wait_for(lambda: done() or self._coordinator.leads(), timeout=limit):
                raise RefreshFailed("timeout", f"no replica stored a refresh within {limit} s of asking")
            took_over = not done()  # there was no leader to ask: this replica took the lead meanwhile
            info, count = self._view.refresh, len(self._view.enabled)
        if took_over:
            return self.refresh()
        if not info.ok:
            raise RefreshFailed(info.reason or "internal", info.error or "the leader's refresh failed")
        return count

    def follow(self, generation: int) -> None:
        """Show what another process committed: reload the view when the store's generation is not ours."""
        if generation == self._seen:
            return
        with self._publishing:
            if generation == self._seen:  # this process's own write, published while we waited for the lock
                return
            generation, view = self._store.load()
            if generation == self._seen:
                return
            self._seen = generation
            event = "refresh" if view.refresh != self._view.refresh else "defaults"
            self._publish(self._with_fallback(view), event)
        with self._cond:
            self._cond.notify_all()  # a follower's refresh waits for the leader's outcome

    def announce_role(self) -> None:
        """Publish the view again: this replica started or stopped leading."""
        with self._publishing:
            self._publish(self._view, "role")
        with self._cond:
            self._cond.notify_all()  # a follower's refresh that found no leader may now be this replica's
