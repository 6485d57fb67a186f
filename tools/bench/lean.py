"""Issue 21's figures: start-up, imports, several instances per host, conditional page polls, nginx."""

from __future__ import annotations

import collections
import gzip
import http.client
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..processes import free_port
from .procs import AS_SHIPPED, Proc, clean_env, wait_until

NGINX = "/usr/sbin/nginx"
# The top-level packages whose import time the start-up lists (the rest is the standard library).
DEPENDENCIES = ("flask", "werkzeug", "jinja2", "click", "babel", "uvicorn", "a2wsgi", "httptools", "requests",
                "urllib3", "charset_normalizer", "idna", "proxmoxer", "peewee", "playhouse", "prometheus_client",
                "dotenv", "yaml", "bcrypt", "psycopg2", "pve_datastore_exporter")
SERVE_IMPORTS = "import pve_datastore_exporter.cli, pve_datastore_exporter.server"


def _serve(sim_env: dict[str, str], db: Path, log_dir: Path, name: str) -> tuple[Proc, int]:
    """`serve` on a free port over the SQLite file `db`, refreshing hourly (the bench's settings)."""
    port = free_port()
    env_file = log_dir / "empty.env"
    env_file.write_text("")
    env = clean_env(**sim_env, **AS_SHIPPED, DATABASE_URL=f"sqlite:///{db}", EXPORTER_LISTEN_ADDRESS=f"127.0.0.1:{port}",
                    EXPORTER_REFRESH_INTERVAL="3600", EXPORTER_LOG_LEVEL="WARNING")
    argv = [sys.executable, "-m", "pve_datastore_exporter", "--env-file", str(env_file), "serve"]
    return Proc(name, argv, env, log_dir), port


def _get(port: int, path: str, headers: dict | None = None, timeout: float = 5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def _poll_until(check, proc: Proc, since: float, timeout: float, what: str) -> float:
    """Seconds from `since` (perf_counter) until `check()` holds, polled every 5 ms; fails early if `proc` died."""
    while time.perf_counter() - since < timeout:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.log_tail()}")
        try:
            if check():
                return time.perf_counter() - since
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{proc.name}: no {what} after {timeout:.0f} s:\n{proc.log_tail()}")


def _metrics_hold_data(port: int) -> bool:
    response, body = _get(port, "/metrics", {"Accept-Encoding": "identity"})
    return response.status == 200 and b"\npve_datastore_size_bytes{" in body


def start_up(sim_env: dict[str, str], work: Path, name: str) -> dict:
    """Exec to /healthz and to the first /metrics with data: an empty database, then the same one filled."""
    db, out = work / f"start-{name}.db", {}
    for state in ("empty", "filled"):  # the first start fills the file the second one finds
        start = time.perf_counter()
        proc, port = _serve(sim_env, db, work, f"start-{name}-{state}")
        try:
            healthz = _poll_until(lambda port=port: _get(port, "/healthz")[0].status == 200, proc, start, 60,
                                  "/healthz")
            data = _poll_until(lambda port=port: _metrics_hold_data(port), proc, start, 120, "data in /metrics")
            out[state] = {"healthz_s": healthz, "metrics_with_data_s": data, "rss_mb": (proc.rss_kib() or 0) * 1024 / 1e6}
        finally:
            proc.stop()
    return out


def import_times(repeat: int = 3) -> dict:
    """`python -X importtime` of what `serve` imports: self time per top-level package, best of `repeat` runs."""
    runs = []
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", SERVE_IMPORTS], capture_output=True,
                              text=True, check=True)
        per: dict[str, float] = collections.Counter()
        for line in done.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            own, _, name = line.removeprefix("import time:").split("|")
            top = name.strip().split(".")[0]
            per[top if top in DEPENDENCIES else "standard library"] += int(own) / 1000
        per["total"] = sum(per.values())
        runs.append(per)
    best = min(runs, key=lambda per: per["total"])  # peewee's refused attempt at psycopg2 lists it at ~0 ms
    return {k: round(v, 1) for k, v in sorted(best.items(), key=lambda kv: -kv[1]) if round(v, 1) > 0}


def interpreter_flags(sim_env: dict[str, str], work: Path, refreshes: int = 6, scrapes: int = 400,
                      rounds: int = 2, settle: float = 1.5) -> dict:
    """VmRSS of `serve` as shipped (AS_SHIPPED) and under a plain `python`, each after the same refreshes
    and scrapes, in alternating order, the lower of `rounds` each: what the interpreter flags buy."""
    from .exporters import Ours  # noqa: PLC0415 - exporters imports this module

    out: dict[str, float] = {"refreshes": refreshes, "scrapes": scrapes, "rounds": rounds}
    for index in range(rounds):
        for shipped in (True, False) if index % 2 == 0 else (False, True):
            name = "shipped" if shipped else "plain"
            ours = Ours(sim_env, work, work, f"flags-{name}-{index}", shipped=shipped)
            try:
                for _ in range(refreshes):
                    ours.refresh()
                for number in range(scrapes):
                    _get(ours.port, "/metrics", {"Accept-Encoding": "gzip" if number % 10 else "identity"})
                time.sleep(settle)  # the heap a refresh freed goes back a second after it
                rss = (ours.proc.rss_kib() or 0) * 1024 / 1e6
            finally:
                ours.stop()
            out[name] = min(out.get(name, rss), rss)
    return out


def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def instances(sim_env: dict[str, str], work: Path, counts=(1, 5, 10), settle: float = 1.5) -> dict:
    """RSS and PSS of 1, 5 and 10 `serve` processes (one SQLite file each) after their first refresh."""
    procs, out = [], {}
    try:
        for count in counts:
            while len(procs) < count:
                index = len(procs)
                proc, port = _serve(sim_env, work / f"instance-{index}.db", work, f"instance-{index}")
                procs.append(proc)
                wait_until(lambda port=port: _metrics_hold_data(port), proc, 120, "first refresh")
            time.sleep(settle)  # each process returns a refresh's freed heap a second after it
            rss = sum(p.rss_kib() or 0 for p in procs)
            pss = sum(_pss_kib(p.pid) for p in procs)
            out[str(count)] = {"rss_mb": rss * 1024 / 1e6, "pss_mb": pss * 1024 / 1e6}
    finally:
        for proc in procs:
            proc.stop()
    return out


def _wire_bytes(response: http.client.HTTPResponse, body: bytes) -> int:
    """Status line, headers and body as they crossed the wire (HTTP/1.1)."""
    head = len(f"HTTP/1.1 {response.status} {response.reason}\r\n") + 2
    return head + sum(len(f"{k}: {v}\r\n") for k, v in response.getheaders()) + len(body)


VERSION = re.compile(rb'id="status"[^>]*data-version="([^"]*)"')


def page_polls(port: int, other_default: str) -> dict:
    """Bytes of page.js' poll: the status part, and the page when the status' version moved; at rest, then after a change."""
    tags, out = {}, {}

    def get(path: str) -> tuple[int, bytes, int]:
        headers = {"Accept-Encoding": "gzip", **({"If-None-Match": tags[path]} if path in tags else {})}
        response, body = _get(port, path, headers, timeout=60)  # gzip: every browser asks for it
        tags[path] = response.getheader("ETag") or tags.get(path)
        text = gzip.decompress(body) if response.getheader("Content-Encoding") == "gzip" else body
        return response.status, text, _wire_bytes(response, body)

    def poll() -> dict:
        status, text, size = get("/?part=status")
        sizes = {"/?part=status": {"status": status, "bytes": size}}
        version = VERSION.search(text)[1] if status == 200 else shown["version"]
        if version != shown["version"]:
            status, text, size = get("/")
            sizes["/"] = {"status": status, "bytes": size}
            shown["version"] = version
        return sizes

    _, page, _ = get("/")  # the page as loaded: the version it shows
    shown = {"version": VERSION.search(page)[1]}
    out["first"] = poll()  # learns the status part's tag
    out["unchanged"] = poll()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/api/datastores/default", body=json.dumps({"hdd_datastore_id": other_default}),
                 headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    conn.close()
    if answer.status != 200:
        raise RuntimeError(f"POST /api/datastores/default answered {answer.status}")
    out["after a default changed"] = poll()
    return out


def other_datastore(port: int) -> str:
    """An enabled datastore that is not the default HDD one."""
    _, body = _get(port, "/api/datastores", timeout=60)
    answer = json.loads(body)
    return next(d["id"] for d in answer["datastores"] if d["id"] != answer["default_hdd"])


class Nginx:
    """Debian's nginx on loopback serving the same gzip bytes at /metrics: the higher anchor (one process)."""

    def __init__(self, directory: Path, log_dir: Path, name: str, content_type: str):
        self.port = free_port()
        conf = directory / "nginx.conf"
        # master_process off: one process, as the invoking user (root's workers would run as nobody,
        # who cannot read the bench's private work directory).
        conf.write_text(f"""daemon off;
master_process off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {log_dir}/{name}.error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {directory}/body; proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fastcgi; uwsgi_temp_path {directory}/uwsgi; scgi_temp_path {directory}/scgi;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{self.port};
    location = /metrics {{
      alias {directory}/metrics.gz;
      types {{ }}
      default_type "{content_type}";
      add_header Content-Encoding gzip;
      add_header Vary Accept-Encoding;
    }}
  }}
}}
""")
        self.proc = Proc(name, [NGINX, "-c", str(conf), "-p", str(directory)], clean_env(), log_dir)
        wait_until(lambda: _get(self.port, "/metrics")[0].status == 200, self.proc, 30, "HTTP answer")

    def stop(self) -> None:
        """End nginx (its master and worker)."""
        self.proc.stop()


def nginx_available() -> bool:
    """Whether the nginx binary is installed (Debian's nginx-light)."""
    return Path(NGINX).exists() or shutil.which("nginx") is not None
