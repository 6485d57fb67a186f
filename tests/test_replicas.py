"""Replicas as real processes on a real PostgreSQL: one reader, failover without two readers, changes everywhere.

Each replica of the failover test reads a simulator of its own (same random seed, so the same
cluster): the simulators' request logs then say which replica read Proxmox, and when.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from pve_datastore_exporter.coordination import MARGIN, TICK
from pve_datastore_exporter.simulator import Simulator
from pve_datastore_exporter.store.leader import LOCK_CLASS
from tools.processes import BIN, ExporterProcess, free_port

from .pg import new_database, serving

pytestmark = pytest.mark.slow

INTERVAL = 2  # s, with PROXMOX_TIMEOUT=1
FAILOVER = INTERVAL + 10  # the bound: one refresh interval + 10 s (how long the helpers wait)
DEADLINE = 3 * 1 + 5  # s: config.refresh_deadline with PROXMOX_TIMEOUT=1 and the cluster's name given
# The designed hand-over (docs/architecture.md#replicas), from the death to the new leader's first read:
# idle, the lock is free at once and a follower tries every TICK; mid-read, the dead read's mark
# (made before the death, DEADLINE + MARGIN long) must pass first.
HANDOVER = {False: TICK, True: DEADLINE + MARGIN + TICK}
SLACK = 3.0  # s: three exporters, three simulators, PostgreSQL and the test on a loaded 2-core machine
SPREAD = 1.0 + 2.0  # s: a change on every replica "within a second" (the design), + 2 s to poll 3 x 2 URLs under load


@pytest.fixture(scope="module")
def postgres_server():
    yield from serving()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return tmp_path_factory.mktemp("sim-certs")


def simulator(certs, latency_ms: float = 0.0) -> Simulator:
    sim = Simulator(nodes=3, datastores=6, random_seed=7, state_dir=str(certs), auth_delay=0.05, drift=False)
    sim.start()
    if latency_ms:
        sim.set_faults(latency_ms=latency_ms)
    return sim


class Replicas:
    """`serve` processes in slots; slot i reads simulator i (or all read one)."""

    def __init__(self, tmp_path, sims: list[Simulator], url: str, interval: int, count: int = 3, **env: str):
        self.tmp_path, self.sims, self.url, self.interval, self.env = tmp_path, sims, url, interval, env
        self.procs: list[ExporterProcess | None] = [None] * count
        for slot in range(count):
            self.start(slot)

    def sim(self, slot: int) -> Simulator:
        return self.sims[slot % len(self.sims)]

    def start(self, slot: int) -> ExporterProcess:
        folder = self.tmp_path / f"slot{slot}"
        folder.mkdir(exist_ok=True)
        env = {**self.sim(slot).env(), "DATABASE_URL": self.url, "EXPORTER_REFRESH_INTERVAL": str(self.interval),
               "PROXMOX_TIMEOUT": "1", "EXPORTER_LOG_LEVEL": "INFO", **self.env}
        self.procs[slot] = ExporterProcess(folder, env).start(wait=30)
        return self.procs[slot]

    def roles(self) -> dict[int, str]:
        found = {}
        for slot, proc in enumerate(self.procs):
            try:
                found[slot] = proc.api("/api/datastores/default")["role"]
            except Exception:  # noqa: BLE001 - a replica just killed or starting
                found[slot] = "down"
        return found

    def leader(self, timeout: float = FAILOVER + 5) -> int:
        """The slot of the one replica that says it leads."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = [slot for slot, role in self.roles().items() if role == "leader"]
            if len(leaders) == 1:
                return leaders[0]
            time.sleep(0.05)
        raise AssertionError(f"no single leader within {timeout} s: {self.roles()}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None:
                proc.stop()


def read_spans(log, gap: float = 0.25) -> list[tuple[float, float]]:
    """A simulator's requests grouped into reads: (first start, last end), requests closer than `gap` s joined."""
    spans: list[tuple[float, float]] = []
    for _, start, end in sorted(log, key=lambda entry: entry[1]):
        if spans and start - spans[-1][1] < gap:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def overlapping(spans: dict[int, list[tuple[float, float]]]) -> list[tuple]:
    """Every two reads by two replicas that overlap in time."""
    return [(a, sa, b, sb) for a in spans for b in spans if a < b
            for sa in spans[a] for sb in spans[b] if sa[0] < sb[1] and sb[0] < sa[1]]


def reads(sim: Simulator) -> int:
    """Reads of the datastores the simulator served (the cluster's name is read beside them, now and then)."""
    return sim.requests_by_path.get("/api2/json/cluster/resources", 0)


def in_flight(sim: Simulator) -> int:
    """Requests the simulator has begun and not answered (its log gets an entry at the end)."""
    return sim.request_count - len(sim.proxy.request_log())


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout} s")


def lock_session(server, url: str) -> int:
    """The backend pid of the leader's lock session in `url`'s database."""
    database = url.rsplit("/", 1)[1]
    [(pid,)] = server.sql(f"SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                          f"WHERE l.locktype = 'advisory' AND l.classid = {LOCK_CLASS} AND l.granted "
                          f"AND d.datname = '{database}'")
    return pid


def first_read_after(sims: list[Simulator], moment: float) -> tuple[float, int] | None:
    """(start, slot) of the first read any replica began after `moment`: slot i reads simulator i."""
    starts = [(start, slot) for slot, sim in enumerate(sims) for start, _ in read_spans(sim.proxy.request_log())
              if start > moment]
    return min(starts, default=None)


def marked(server, url: str) -> bool:
    """True while the leader's read mark (docs/architecture.md#replicas) is set in `url`'s database."""
    [(mark,)] = server.sql("SELECT reading_until FROM leader WHERE id = 1", database=url.rsplit("/", 1)[1])
    return mark is not None


def stopped_between_reads(proc: ExporterProcess, sim: Simulator, server, url: str) -> bool:
    """Freeze the leader (SIGSTOP); True if it stands between reads, else let it go on (SIGCONT).

    The simulator's quiet is not enough: the mark is set before a read's first request and cleared
    after its last, and under load those gaps last long enough for a poll to fall into one. A frozen
    leader cannot set or clear its mark: the kill that follows is between reads for sure.
    """
    proc.proc.send_signal(signal.SIGSTOP)
    if in_flight(sim) == 0 and sim.request_count > 0 and not marked(server, url):
        return True
    proc.proc.send_signal(signal.SIGCONT)
    return False


def kill_leader(replicas: Replicas, server, how: str, mid_read: bool) -> tuple[int, float]:
    """Kill the leader (`kill` -9, or `terminate` its lock session) idle or mid-read; (its slot, when)."""
    slot = replicas.leader()
    sim = replicas.sim(slot)
    if mid_read:
        wait_for(lambda: in_flight(sim) > 0, 3 * INTERVAL, "read in progress")  # the mark precedes the requests
    else:
        wait_for(lambda: stopped_between_reads(replicas.procs[slot], sim, server, replicas.url), 3 * INTERVAL,
                 "leader between reads")
    if how == "terminate":
        pid = lock_session(server, replicas.url)
        moment = time.monotonic()
        server.sql(f"SELECT pg_terminate_backend({pid})")
        replicas.procs[slot].proc.send_signal(signal.SIGCONT)  # a leader frozen between reads goes on, cut off
    else:
        moment = time.monotonic()
        replicas.procs[slot].kill9()
    return slot, moment


# Which of the ten deaths happen mid-read; the session cut (pg_terminate_backend) is one of them.
DEATHS = [("kill", False), ("kill", True), ("kill", False), ("terminate", True), ("kill", False),
          ("kill", False), ("kill", False), ("kill", False), ("kill", False), ("kill", False)]


@pytest.mark.timeout(170)
def test_ten_leader_deaths_hand_over_and_two_replicas_never_read_at_once(tmp_path, postgres_server, certs):
    sims = [simulator(certs, latency_ms=300) for _ in range(3)]  # a read takes 0.6 s of every 2 s
    # The cluster's name given: no /cluster/status call, and a deadline of 3 x 1 + 5 = 8 s.
    replicas = Replicas(tmp_path, sims, new_database(postgres_server), INTERVAL, PROXMOX_CLUSTER_NAME="pve-sim")
    try:
        for how, mid_read in DEATHS:
            slot, moment = kill_leader(replicas, postgres_server, how, mid_read)
            started, reader = wait_for(lambda after=moment + 0.05: first_read_after(sims, after), FAILOVER + 5,
                                       f"read after {how}")
            bound = HANDOVER[mid_read] + SLACK
            assert started - moment <= bound, f"{how} (mid-read: {mid_read}): {started - moment:.1f} s > {bound} s"
            assert reader == replicas.leader(), (reader, replicas.roles())  # the read was the new leader's
            if how == "kill":
                assert reader != slot  # and not the dead one's (its simulator would say so)
                replicas.start(slot)
        spans = {index: read_spans(sim.proxy.request_log()) for index, sim in enumerate(sims)}
        assert not overlapping(spans)
    finally:
        replicas.stop()
        for sim in sims:
            sim.stop()


def metric_lines(proc: ExporterProcess, prefix: str) -> list[str]:
    try:
        return [line for line in proc.get("/metrics").text.splitlines() if line.startswith(prefix)]
    except Exception:  # noqa: BLE001 - a scrape during a restart
        return []


def everywhere(replicas: list[ExporterProcess], check, timeout: float = SPREAD, what: str = "change") -> float:
    """Seconds until `check(replica)` holds on every replica; fails after `timeout`."""
    started = time.monotonic()
    wait_for(lambda: all(check(r) for r in replicas), timeout, f"{what} on every replica")
    return time.monotonic() - started


def shows_default(datastore: str):
    def check(proc: ExporterProcess) -> bool:
        api = proc.api("/api/datastores/default")["hdd_datastore"] == datastore
        line = [x for x in metric_lines(proc, "pve_datastore_default{") if 'role="hdd"' in x]
        return api and len(line) == 1 and f'datastore="{datastore}"' in line[0] and 'source="db"' in line[0]
    return check


def test_one_reader_and_every_change_on_every_replica_within_a_second(tmp_path, postgres_server, certs):
    sims = [simulator(certs) for _ in range(3)]  # one each: a simulator's reads are its replica's
    group = Replicas(tmp_path, sims, new_database(postgres_server), interval=3600)  # no refresh but the first
    try:
        leader = group.leader()
        sim = sims[leader]
        only_the_leader_read = [1 if slot == leader else 0 for slot in range(3)]
        procs = group.procs
        followers = [p for slot, p in enumerate(procs) if slot != leader]
        assert [metric_lines(p, "pve_datastore_leader ") for p in procs].count(["pve_datastore_leader 1.0"]) == 1
        everywhere(procs, lambda p: p.api()["last_refresh"]["ok"], 5, "first refresh")
        assert [reads(s) for s in sims] == only_the_leader_read  # one reader, whatever the replicas' count

        answer = followers[0].post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"})
        assert answer.status_code == 200
        everywhere(procs, shows_default("ceph-vm"), what="default set through a follower")

        sim.cluster.set_usage("tank", used=123_456_789, node="pve2")
        for s in sims:
            s.reset_stats()
        body = followers[1].post("/api/datastores/refresh").json()
        assert (body["success"], body["count"], body["role"]) == (True, 5, "follower")
        assert [reads(s) for s in sims] == only_the_leader_read  # the leader read, once; the follower asked it to
        # Every replica labels it with the name the leader read from /cluster/status.
        figure = 'pve_datastore_used_bytes{pve_cluster="pve-sim",datastore="tank",node="pve2"} 123456789'
        everywhere(procs, lambda p: figure in metric_lines(p, "pve_datastore_used_bytes{"), what=figure)

        for s in sims:
            s.reset_stats()
        # The command with a follower's settings: had it read itself, that follower's simulator would say so.
        command = subprocess.run([str(BIN), "--env-file", "/dev/null", "refresh"], env=followers[0].env,
                                 capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert command.stdout.strip() == "refreshed 5 datastores", command.stderr
        assert [reads(s) for s in sims] == only_the_leader_read  # the `refresh` command, too, had the leader read

        sim.set_faults(status=503, reason="Service Unavailable")
        failed = followers[0].post("/api/datastores/refresh")
        assert failed.status_code == 502 and "http_5xx" in failed.json()["message"]  # the leader's failure
        everywhere(procs, lambda p: metric_lines(p, "pve_datastore_up ") == ["pve_datastore_up 0.0"],
                   what="the failed refresh")
    finally:
        group.stop()
        for s in sims:
            s.stop()


def test_postgres_stopped_and_started_answers_throughout_and_recovers_by_itself(tmp_path, certs):
    server = next(serving_once := serving())
    sim = simulator(certs)
    group = Replicas(tmp_path, [sim], new_database(server), interval=INTERVAL, count=2)
    try:
        group.leader()
        procs = group.procs
        everywhere(procs, lambda p: p.api()["last_refresh"]["ok"], 5, "first refresh")
        server.stop("fast")  # every session ends, the leader's lock with it
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for proc in procs:
                for path in ("/api/datastores", "/api/datastores/default", "/", "/?part=status", "/metrics"):
                    assert proc.get(path).status_code == 200, path
                assert proc.api()["source"] == "env"  # the answers say the DB is not where this comes from
                defaults = metric_lines(proc, "pve_datastore_default{")
                assert len(defaults) == 2 and all('source="env"' in line for line in defaults), defaults  # /metrics too
        for path, body in (("/api/datastores/default", {"json": {"hdd_datastore_id": "ceph-vm"}}),
                           ("/api/datastores/refresh", {})):
            response = procs[0].post(path, **body)
            assert response.status_code == 503 and response.json()["error"] == "db_unavailable"
        server.start()
        wait_for(lambda: procs[0].post("/api/datastores/default", json={"hdd_datastore_id": "ceph-vm"}).ok, 10,
                 "a write after the restart")
        everywhere(procs, shows_default("ceph-vm"), timeout=10, what="the default, after the restart")
        group.leader()
        sim.reset_stats()
        wait_for(lambda: reads(sim) >= 1, 3 * INTERVAL, "a refresh by the new leader")
    finally:
        group.stop()
        sim.stop()
        serving_once.close()


def test_a_second_serve_on_one_sqlite_file_refuses_to_start_and_the_cli_still_works(tmp_path, certs):
    sim = simulator(certs)
    first = ExporterProcess(tmp_path, {**sim.env(), "EXPORTER_REFRESH_INTERVAL": "3600"}).start()
    try:
        wait_for(lambda: first.api()["last_refresh"]["ok"], 5, "first refresh")
        second = subprocess.run([str(BIN), "--env-file", "/dev/null", "serve"], env=first.env | {
            "EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}"}, capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert "PostgreSQL" in second.stderr and str(first.db) in second.stderr
        cli = subprocess.run([str(BIN), "--env-file", "/dev/null", "set-default", "--hdd", "ceph-vm"],
                             env=first.env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert cli.returncode == 0, cli.stderr
        everywhere([first], shows_default("ceph-vm"), what="the set-default command's change")
        assert first.api("/api/datastores/default")["role"] == "leader"
    finally:
        first.stop()
        sim.stop()
