"""The refresh loop: interval with jitter, exponential backoff while failing, a clean stop."""

import threading

import pytest

from pve_datastore_exporter.poller import Poller, next_delay
from pve_datastore_exporter.records import RefreshFailed


@pytest.mark.parametrize("failures,low,high", [(0, 54, 66), (1, 108, 132), (2, 216, 264), (3, 432, 528), (9, 432, 528)])
def test_delay_doubles_per_failure_up_to_eight_intervals_with_ten_percent_jitter(failures, low, high):
    assert next_delay(60, failures, 0.0) == pytest.approx(low)
    assert next_delay(60, failures, 1.0) == pytest.approx(high)


class CountingService:
    def __init__(self, fail_times=0):
        self.calls = 0
        self.fail_times = fail_times
        self.called = threading.Event()

    def refresh(self):
        self.calls += 1
        self.called.set()
        if self.calls <= self.fail_times:
            raise RefreshFailed("connection", "down")
        if self.fail_times < 0:
            raise ValueError("a bug")
        return 3


def test_tick_counts_failures_and_resets_on_success():
    service = CountingService(fail_times=2)
    poller = Poller(service, 60)
    poller.tick()
    poller.tick()
    assert poller.failures == 2
    poller.tick()
    assert poller.failures == 0


def test_a_bug_in_a_refresh_does_not_end_the_loop():
    poller = Poller(CountingService(fail_times=-1), 60)
    poller.tick()
    assert poller.failures == 1


def test_loop_refreshes_at_once_and_stops_promptly():
    service = CountingService()
    poller = Poller(service, 3600)
    poller.start()
    assert service.called.wait(5)
    poller.stop(timeout=2)
    assert not poller._thread.is_alive() and service.calls == 1


def test_interval_zero_means_on_demand_only():
    service = CountingService()
    poller = Poller(service, 0)
    poller.start()
    assert not poller._thread.is_alive() and service.calls == 0
    poller.stop()


def test_a_follower_leaves_the_refreshes_to_the_leader():
    service, leading = CountingService(), []
    poller = Poller(service, 60, leads=lambda: bool(leading))
    poller.tick()
    assert service.calls == 0 and poller.failures == 0
    leading.append(True)
    poller.tick()
    assert service.calls == 1


def test_poke_refreshes_now_with_or_without_a_loop():
    service = CountingService()
    poller = Poller(service, 3600)
    poller.start()
    assert service.called.wait(5)
    service.called.clear()
    poller.poke()  # a new leader, or a follower's request: not an hour from now
    assert service.called.wait(5) and service.calls == 2
    poller.stop(timeout=2)
    on_demand = CountingService()
    Poller(on_demand, 0).poke()
    assert on_demand.called.wait(5)
