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
from .poller import Poller
from .service import RefreshFailed, Service, StoreError, UnknownDatastore
from .table import format_table

log = logging.getLogger("pve_datastore_exporter")


class SecretFilter(logging.Filter):
    """Replaces every configured secret in a log record's text: they never reach a log line."""

    def __init__(self, secrets: tuple[str, ...]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the message and any traceback with the secrets masked."""
        record.msg, record.args = configuration.scrub(record.getMessage(), self.secrets), None
        if record.exc_info:
            record.exc_text = configuration.scrub(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True


def setup_logging(config: Config) -> None:
    """One stderr handler (journald adds time), secrets scrubbed."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter(config.secrets()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)


def build(config: Config) -> Service:
    """The service over the production store and reader, with the DB loaded."""
    service = Service(config)
    service.start()
    return service


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
    if not config.proxmox_verify_ssl:
        log.warning("PROXMOX_VERIFY_SSL=false: the cluster's TLS certificate is not checked"
                    + (" (PROXMOX_CA_BUNDLE is ignored)" if config.proxmox_ca_bundle else ""))
    service = build(config)
    poller = Poller(service, config.refresh_interval)
    host, port = parse_listen_address(config.listen_address)
    try:
        # waitress's own cap cuts a huge upload early; up to it, the app answers 413 in its envelope.
        server = create_server(create_wsgi(service, config), host=host, port=port, threads=8,
                               ident="pve-datastore-exporter", clear_untrusted_proxy_headers=True,
                               max_request_body_size=1024 * 1024)
    except OSError as exc:
        raise ConfigError(f"EXPORTER_LISTEN_ADDRESS: cannot listen on {config.listen_address}: {exc.strerror}") from None
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
    service = build(config)
    try:
        count = service.refresh()
    except RefreshFailed as exc:
        print(f"refresh failed ({exc.reason}): {exc}", file=sys.stderr)
        return 1
    print(f"refreshed {count} datastores")
    return 0


def cmd_list(config: Config, args) -> int:
    """Print the datastores from the DB (fetching first if it is empty)."""
    print(format_table(build(config).datastores()))
    return 0


def cmd_set_default(config: Config, args) -> int:
    """Set the default HDD and/or SSD datastore in the DB."""
    if not args.hdd and not args.ssd:
        print("set-default: give --hdd and/or --ssd", file=sys.stderr)
        return 2
    try:
        view, changed = build(config).set_defaults(hdd=args.hdd, ssd=args.ssd)
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
    try:
        Service(config).init_db()
    except StoreError as exc:
        print(f"init-db: the database cannot be upgraded: {exc}", file=sys.stderr)
        return 1
    print(f"database ready: {configuration.mask_url(config.database_url)}")
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
    p.add_argument("--env-file", help="the .env file to read (default ./.env when it exists)")
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
        if args.env_file is not None and args.env_file != os.devnull and not os.path.isfile(args.env_file):
            what = "is not a file" if os.path.exists(args.env_file) else "does not exist"
            raise ConfigError(f"--env-file: {args.env_file} {what}")
        config = configuration.load(".env" if args.env_file is None else args.env_file)
        setup_logging(config)
        if func is None:
            config.check_proxmox()
            return serve(config)
        return func(config, args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
