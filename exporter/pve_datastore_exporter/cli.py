"""argparse sub-commands; wiring only."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import tempfile

from . import __version__
from . import config as configuration
from .config import Config, ConfigError, parse_listen_address
from .metrics import Exposition
from .poller import Poller
from .proxmox import Reader
from .records import View
from .service import RefreshFailed, Service, StoreError, UnknownDatastore
from .store import Store

log = logging.getLogger("pve_datastore_exporter")


class SecretFilter(logging.Filter):
    """Replaces every configured secret in a log record's text: they never reach a log line."""

    def __init__(self, secrets: tuple[str, ...]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self.secrets:
            message = message.replace(secret, "***")
        record.msg, record.args = message, None
        return True


def setup_logging(config: Config) -> None:
    """One stderr handler (journald adds time), secrets scrubbed."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter(config.secrets()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)


def build(config: Config) -> tuple[Service, Exposition]:
    """The service over its store and reader, with the exposition subscribed and the DB loaded."""
    service = Service(config, Reader(config), Store(config.database_url))
    exposition = Exposition()
    service.subscribe(exposition)
    service.start()
    return service, exposition


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas before any thread starts (as MALLOC_ARENA_MAX=2 would).

    A refresh runs on whichever of the HTTP threads asked for it; with one arena per thread, the
    memory each refresh frees piles up per thread (100 nodes x 100 datastores: ~93 MB instead of ~71).
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def serve(config: Config, ready=None) -> int:
    """Refresh in the background and serve HTTP until SIGTERM or SIGINT."""
    from waitress import create_server

    from .web import create_wsgi

    limit_malloc_arenas()
    if not config.proxmox_verify_ssl and not config.proxmox_ca_bundle:
        log.warning("PROXMOX_VERIFY_SSL=false: the cluster's TLS certificate is not checked")
    service, exposition = build(config)
    poller = Poller(service, config.refresh_interval)
    host, port = parse_listen_address(config.listen_address)
    server = create_server(create_wsgi(service, exposition, config), host=host, port=port,
                           threads=8, ident="pve-datastore-exporter", clear_untrusted_proxy_headers=True)
    poller.start()
    every = f"every {config.refresh_interval}s" if config.refresh_interval else "on demand only"
    log.info("serving on http://%s:%d (refresh %s)", host, port, every)
    if ready:
        ready(server)
    _stop_on_signals()
    try:
        server.run()  # returns when a signal raises KeyboardInterrupt inside its loop
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping")
        poller.stop()
        server.close()
    return 0


def _stop_on_signals() -> None:
    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def demo(config: Config, args) -> int:
    """The simulated cluster and the exporter against it, in one process."""
    from .simulator import Simulator

    state = os.path.abspath(args.state_dir)
    sim = Simulator(nodes=args.nodes, datastores=args.datastores, seed=1, state_dir=os.path.join(state, "simulator"),
                    auth_delay=0.2)
    sim.start()
    env = sim.env()
    config = config.replace(
        proxmox_host=env["PROXMOX_HOST"], proxmox_user=env["PROXMOX_USER"],
        proxmox_token_name=env["PROXMOX_TOKEN_NAME"], proxmox_token_value=env["PROXMOX_TOKEN_VALUE"],
        proxmox_ca_bundle=env["PROXMOX_CA_BUNDLE"], proxmox_verify_ssl=True,
        database_url=f"sqlite:///{os.path.join(state, 'demo.db')}", listen_address=args.listen,
        refresh_interval=args.interval)
    setup_logging(config)

    def announce(server):
        base = f"http://{args.listen}"
        print(f"\nSimulated Proxmox: {sim.url} ({args.nodes} nodes x {args.datastores} datastores)\n"
              f"Exporter:   {base}/\n  metrics:  {base}/metrics\n  API:      {base}/api/datastores\n"
              "Press Ctrl-C to stop both.\n", flush=True)

    try:
        return serve(config, ready=announce)
    finally:
        sim.stop()


def cmd_refresh(config: Config, args) -> int:
    """Refresh once now and print the count."""
    config.check_proxmox()
    service, _ = build(config)
    try:
        count = service.refresh()
    except RefreshFailed as exc:
        print(f"refresh failed ({exc.reason}): {exc}", file=sys.stderr)
        return 1
    print(f"refreshed {count} datastores")
    return 0


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return str(value)


def format_table(view: View) -> str:
    """A table like `pvesm status`, with the defaults marked."""
    lines = [f"{'Name':<20} {'Type':<10} {'Status':<9} {'Total':>12} {'Used':>12} {'Available':>12} {'%':>7}  Default"]
    for row in view.rows:
        r = row.record
        if not r.enabled:
            continue
        percent = f"{100 * r.used / r.size:.2f}%" if r.size else "-"
        marks = ",".join(m for m, on in (("hdd", row.is_default_hdd), ("ssd", row.is_default_ssd)) if on)
        status = "active" if r.active else "inactive"
        lines.append(f"{r.id:<20} {r.type:<10} {status:<9} {_size(r.size):>12} {_size(r.used):>12} "
                     f"{_size(r.available):>12} {percent:>7}  {marks}")
    lines.append(f"default HDD: {view.default_hdd}  default SSD: {view.default_ssd}  (source: {view.source})")
    return "\n".join(lines)


def cmd_list(config: Config, args) -> int:
    """Print the datastores from the DB (fetching first if it is empty)."""
    service, _ = build(config)
    print(format_table(service.datastores()))
    return 0


def cmd_set_default(config: Config, args) -> int:
    """Set the default HDD and/or SSD datastore in the DB."""
    if not args.hdd and not args.ssd:
        print("set-default: give --hdd and/or --ssd", file=sys.stderr)
        return 2
    service, _ = build(config)
    try:
        view, changed = service.set_defaults(hdd=args.hdd, ssd=args.ssd)
    except UnknownDatastore as exc:
        print(f"set-default: datastore '{exc.args[0]}' does not exist in the cluster or is disabled", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"set-default: the database cannot be written: {exc}", file=sys.stderr)
        return 1
    print(f"default HDD: {view.default_hdd}  default SSD: {view.default_ssd}" + ("" if changed else " (unchanged)"))
    return 0


def cmd_init_db(config: Config, args) -> int:
    """Create or upgrade the schema in place."""
    Store(config.database_url).migrate()
    print(f"database ready: {config.database_url}")
    return 0


def cmd_check_config(config: Config, args) -> int:
    """Print the effective settings, secrets masked; fail if Proxmox access is incomplete."""
    for name, value, help_text in configuration.describe(config):
        print(f"{name:<27} {value:<40} # {help_text}")
    config.check_proxmox()
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line."""
    from . import simulator

    p = argparse.ArgumentParser(prog="pve-datastore-exporter", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--env-file", default=".env", help="the .env file to read (default ./.env)")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve /metrics, the API and the page (default)").set_defaults(func=None)
    d = sub.add_parser("demo", help="run the simulated cluster and the exporter against it")
    d.add_argument("--listen", default="127.0.0.1:9863")
    d.add_argument("--nodes", type=int, default=3)
    d.add_argument("--datastores", type=int, default=6)
    d.add_argument("--interval", type=int, default=15)
    d.add_argument("--state-dir", default=os.path.join(tempfile.gettempdir(), "pve-datastore-exporter-demo"))
    d.set_defaults(func=demo)
    sub.add_parser("refresh", help="refresh from Proxmox once").set_defaults(func=cmd_refresh)
    sub.add_parser("list", help="print the datastores like `pvesm status`").set_defaults(func=cmd_list)
    s = sub.add_parser("set-default", help="set the default HDD and/or SSD datastore")
    s.add_argument("--hdd")
    s.add_argument("--ssd")
    s.set_defaults(func=cmd_set_default)
    sub.add_parser("init-db", help="create or upgrade the database schema").set_defaults(func=cmd_init_db)
    sub.add_parser("check-config", help="print the effective settings").set_defaults(func=cmd_check_config)
    simulator.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = parser().parse_args(argv)
    func = getattr(args, "func", None)
    if args.command == "simulate":
        return func(args)
    try:
        config = configuration.load(args.env_file)
        setup_logging(config)
        if func is None:
            config.check_proxmox()
            return serve(config)
        return func(config, args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
