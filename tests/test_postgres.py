"""DATABASE_URL=postgresql://...: the same store and service on a real PostgreSQL server."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from pve_datastore_exporter.records import RefreshInfo
from pve_datastore_exporter.service import Service, default_warnings
from pve_datastore_exporter.store import Store, StoreError, UnknownDatastore
from tools.processes import free_port

from .factories import FakeReader, cluster, config, record
from .needs import in_ci, require_tool

DEFAULTS = {"hdd": "local-lvm", "ssd": "local"}
INFO = RefreshInfo(last_attempt=1.0, last_success=1.0, ok=True, duration=0.5, count=1)


def bookkeeping() -> RefreshInfo:
    """What the service records after a refresh, as replace_snapshot asks for it."""
    return INFO


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return require_tool(str(found[-1]) if found else name)


@pytest.fixture(scope="module")
def postgres_url():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    try:
        import psycopg2  # noqa: F401 - peewee's PostgreSQL driver
    except ImportError:
        if in_ci():
            raise
        pytest.skip("psycopg2 is not installed (pip install -e '.[test]')")
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups"] if os.geteuid() == 0 else []
    base = Path(tempfile.mkdtemp(prefix="pvedx-pg-"))
    if as_postgres:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", free_port()
    subprocess.run([*as_postgres, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60", "-o",
                    f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True, timeout=90)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([*as_postgres, _pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                              "pvedx"], capture_output=True).returncode and time.monotonic() < deadline:
            time.sleep(0.5)
        yield f"postgresql://postgres@127.0.0.1:{port}/pvedx"
    finally:
        subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def store(postgres_url):
    s = Store(postgres_url)
    s.migrate()
    yield s
    with s.database.connection_context():
        s.database.execute_sql("DROP TABLE IF EXISTS datastores, datastore_nodes, refresh_state")


def test_snapshot_defaults_and_vanishing_on_postgres(store):
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    store.migrate()
    store.set_defaults(hdd="ceph-vm")
    # IDs that a linguistic collation (en_US) orders unlike Python: the views must not care.
    odd = [record(i) for i in ("cephfs", "ceph-pool", "Zeta", "a.b")]
    written = store.replace_snapshot([r for r in cluster() if r.id != "ceph-vm"] + odd, DEFAULTS, DEFAULTS,
                                     bookkeeping)
    view = store.view()
    assert written == view  # what the snapshot returns is what PostgreSQL holds
    assert [r.id for r in view.rows] == sorted(r.id for r in view.rows)
    assert (view.default_hdd, view.default_ssd) == ("ceph-vm", "local")
    assert not view.row("ceph-vm").enabled and view.row("local").size == 2000
    assert sum(r.enabled for r in view.rows) == 6
    with pytest.raises(UnknownDatastore):
        store.set_defaults(ssd="old-iso")


def test_never_two_defaults_on_postgres(store):
    store.replace_snapshot(cluster(), DEFAULTS, DEFAULTS, bookkeeping)
    with pytest.raises(StoreError):
        with store.database.connection_context():
            store.database.execute_sql("UPDATE datastores SET is_default_hdd = true WHERE id = 'ceph-vm'")


def test_service_on_postgres(store, tmp_path):
    c = config(tmp_path, database_url=store.url, hdd_datastore="HDD-Storage")
    service = Service(c, FakeReader(), store)
    service.start()
    view = service.datastores()
    assert [r.id for r in view.rows if r.enabled] == ["ceph-vm", "local", "local-lvm"]
    assert default_warnings(view) == ["default HDD datastore 'HDD-Storage' does not exist in the cluster"]
    assert service.refresh() == 3 and service.view.refresh.ok
