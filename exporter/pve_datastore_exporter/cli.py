"""argparse sub-commands; wiring only."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from . import __version__, coordination
from . import config as configuration
from .answers import datastores_answer
from .config import Config, ConfigError
from .formatting import format_table, printable
from .logs import setup_logging
from .records import RefreshFailed
from .service import Service, StoreError, UnknownDatastore


def build(config: Config) -> Service:
    """The service over the production store and reader, with the DB loaded."""
    service = Service(config)
    service.start()
    return service


def cmd_serve(config: Config, args) -> int:
    """Serve against the configured cluster (the default command)."""
    from .server import serve  # uvicorn and Flask: loaded by the commands that serve only

    config.check_proxmox()
    return serve(config)


def cmd_demo(config: Config, args) -> int:
    """The simulated cluster and the exporter against it, in one process."""
    from .server import serve
    from .simulator import Simulator
    from .simulator.risk import stage_demo

    state = os.path.abspath(args.state_dir)
    sim = Simulator(nodes=args.nodes, datastores=args.datastores, random_seed=1,
                    state_dir=os.path.join(state, "simulator"), auth_delay=0.2)
    stage_demo(sim.cluster)  # a degraded zpool, a thin pool near its metadata limit, a worn SSD
    sim.start()
    env = sim.env()
    config = config.replace(
        proxmox_host=env["PROXMOX_HOST"], proxmox_user=env["PROXMOX_USER"],
        proxmox_token_name=env["PROXMOX_TOKEN_NAME"], proxmox_token_value=env["PROXMOX_TOKEN_VALUE"],
        proxmox_ca_bundle=env["PROXMOX_CA_BUNDLE"], proxmox_verify_ssl=True,
        database_url=f"sqlite:///{os.path.join(state, 'demo.db')}", listen_address=args.listen,
        refresh_interval=args.interval, pools_interval=max(args.interval, 15), disks_interval=60,
        provisioned_interval=60)
    setup_logging(config)

    def announce(server):
        base = f"{server.scheme}://{args.listen}"
        print(f"\nSimulated Proxmox: {sim.url} ({args.nodes} nodes x {args.datastores} datastores)\n"
              f"Exporter:   {base}/\n  metrics:  {base}/metrics\n  API:      {base}/api/datastores\n"
              "Press Ctrl-C to stop both.\n", flush=True)

    try:
        return serve(config, ready=announce)
    finally:
        sim.stop()


def cmd_simulate(config: None, args) -> int:
    """Serve the simulated Proxmox VE API until SIGINT or SIGTERM (needs no configuration)."""
    from .simulator import Simulator, run_until_signal

    sim = Simulator(nodes=args.nodes, datastores=args.datastores, random_seed=args.random_seed,
                    state_dir=os.path.abspath(args.state_dir), drift=args.drift, drift_rate=args.drift_rate,
                    shuffle=args.shuffle, vms=args.vms, quirks=args.quirks, latency_ms=args.latency_ms,
                    auth_delay=args.auth_delay, token_value=args.token_value, password=args.password)
    return run_until_signal(sim, args.listen)


def cmd_refresh(config: Config, args) -> int:
    """Refresh once now and print the count (beside replicas on PostgreSQL: through their leader)."""
    config.check_proxmox()
    coordinator = coordination.for_command(config)
    service = Service(config, coordinator=coordinator)
    service.start()
    coordinator.start(prepare=service.init_db, follow=service.display.follow, role_changed=service.display.announce_role)
    try:
        count = service.refresh()
    except RefreshFailed as exc:
        print(f"refresh failed ({exc.reason}): {printable(exc)}", file=sys.stderr)
        return 1
    finally:
        coordinator.stop()
    print(f"refreshed {count} datastores")
    return 0


def cmd_list(config: Config, args) -> int:
    """Print the datastores from the DB (fetching first if it is empty), as a table or as the API's JSON."""
    service = build(config)
    view = service.datastores()
    if args.json:
        # The API's own builder (answers.py, plain Python), so the two cannot drift.
        print(json.dumps(datastores_answer(view, service.age()), indent=2))
        return 0
    print(format_table(view))
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
    print(f"default HDD: {printable(view.default_hdd)}  default SSD: {printable(view.default_ssd)}" + ("" if changed else " (unchanged)"))
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
        print(f"{name:<27} {printable(value):<40} # {help_text}")
    config.check_proxmox()
    if config.web_config_file:
        from .http import webconfig

        web = webconfig.load(config.web_config_file)
        webconfig.forget_inline(web)  # check-config loads no key: no copy of it left behind
        print(f"web config {config.web_config_file}: {web.summary()}")
    return 0


def cmd_healthcheck(config: Config, args) -> int:
    """Exit 0 when the exporter serving with these settings answers GET /healthz, 1 otherwise."""
    from .http import probe

    alive, seen = probe.check(config)
    print(f"{'healthy' if alive else 'unhealthy'}: {seen}", file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


PROG = "pve-datastore-exporter"
DESCRIPTION = ("Prometheus exporter and JSON API for the datastores of a Proxmox VE cluster: reads their capacity, "
               "caches it with the default HDD and SSD datastores in a database, and serves /metrics, the API and "
               "a page. Without a command it serves.")


def global_options(with_defaults: bool) -> argparse.ArgumentParser:
    """The options taken before or after the sub-command: declared here once, added to every parser.

    A sub-parser writes all its defaults over what the main parser parsed, so its copy defaults to
    SUPPRESS: `--env-file x serve` keeps x, `serve --env-file x` sets it, and the main parser's copy
    gives the default when it is given nowhere. (So no %(default)s in these help texts.)
    """
    options = argparse.ArgumentParser(add_help=False)

    def add(*flags, **kwargs):
        if not with_defaults:
            kwargs["default"] = argparse.SUPPRESS
        options.add_argument(*flags, **kwargs)

    add("--version", action="version", version=f"{PROG} {__version__}")  # not %(prog)s: "… list 0.1.0"
    add("--env-file", help="the .env file to read (default ./.env when it exists)")
    add("--web.config.file", dest="web_config_file", metavar="FILE",
        help="exporter-toolkit web config: TLS, basic auth, headers (wins over EXPORTER_WEB_CONFIG_FILE)")
    return options


def parser() -> argparse.ArgumentParser:
    """The command line: every sub-command sets `func(config, args) -> int`, and `needs_config`."""
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, parents=[global_options(with_defaults=True)])
    p.set_defaults(func=cmd_serve, needs_config=True)  # no sub-command: serve
    sub = p.add_subparsers(dest="command")

    def command(name: str, func, help_text: str, needs_config: bool = True) -> argparse.ArgumentParser:
        command_parser = sub.add_parser(name, help=help_text, description=help_text,
                                        parents=[global_options(with_defaults=False)])
        command_parser.set_defaults(func=func, needs_config=needs_config)
        return command_parser

    command("serve", cmd_serve, "serve /metrics, the API and the page (default)")
    d = command("demo", cmd_demo, "run the simulated cluster and the exporter against it")
    d.add_argument("--listen", default="127.0.0.1:9863")
    d.add_argument("--nodes", type=int, default=3)
    d.add_argument("--datastores", type=int, default=6)
    d.add_argument("--interval", type=int, default=15)
    d.add_argument("--state-dir", default=os.path.join(tempfile.gettempdir(), "pve-datastore-exporter-demo"))
    command("refresh", cmd_refresh, "refresh from Proxmox once")
    command("list", cmd_list, "print the datastores like `pvesm status`").add_argument(
        "--json", action="store_true", help="print GET /api/datastores's JSON answer instead of the table")
    s = command("set-default", cmd_set_default, "set the default HDD and/or SSD datastore")
    s.add_argument("--hdd", metavar="ID", help="the datastore new HDD disks go to (an enabled datastore of the cluster)")
    s.add_argument("--ssd", metavar="ID", help="the datastore new SSD disks go to (an enabled datastore of the cluster)")
    command("init-db", cmd_init_db, "create or upgrade the database schema")
    command("check-config", cmd_check_config, "print the effective settings")
    command("healthcheck", cmd_healthcheck, "exit 0 when the exporter serving with these settings answers "
            "GET /healthz (the image's HEALTHCHECK)")
    _simulate_arguments(command("simulate", cmd_simulate, "serve a simulated Proxmox VE API over HTTPS "
                                "(token and ticket auth, drifting usage, faults over POST /_sim/faults)",
                                needs_config=False))
    return p


def _simulate_arguments(p: argparse.ArgumentParser) -> None:
    # Declared here, not in the simulator package, so that serving never imports a simulator module.
    add = p.add_argument
    add("--listen", default="127.0.0.1:8006", help="HOST:PORT to serve on (default %(default)s)")
    add("--nodes", type=int, default=3, help="cluster nodes pve1..pveN (default %(default)s)")
    add("--datastores", type=int, default=6, help="datastores (default %(default)s)")
    add("--random-seed", type=int, default=1, help="seed for sizes, usage, token and order (default %(default)s)")
    add("--state-dir", default=".demo/simulator", help="where the CA and certificate live (default %(default)s)")
    add("--latency-ms", type=float, default=0.0, help="latency added to every API request")
    add("--auth-delay", type=float, default=3.0, help="seconds before a 401, like pve (default %(default)s)")
    add("--token-value", help="API token secret (default: a UUID derived from the random seed)")
    add("--password", default="simulator", help="password of the user for ticket login (default %(default)s)")
    add("--no-drift", dest="drift", action="store_false", help="usage stays where it starts")
    add("--drift-rate", type=float, default=0.05,
        help="fastest usage drift, as a fraction of the size per hour (default %(default)s)")
    add("--no-shuffle", dest="shuffle", action="store_false", help="answer lists in a stable order")
    add("--vms", type=int, default=0, help="guests to list (default %(default)s)")
    add("--quirks", action="store_true", help="send 0/1 fields as strings, like some storage plugins")


def load_config(env_file: str | None) -> Config:
    """The settings from --env-file (default ./.env when it exists) and the environment."""
    if env_file is not None and env_file != os.devnull and not os.path.isfile(env_file):
        what = "is not a file" if os.path.exists(env_file) else "does not exist"
        raise ConfigError(f"--env-file: {env_file} {what}")
    return configuration.load(".env" if env_file is None else env_file)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = parser().parse_args(argv)
    try:
        config = None
        if args.needs_config:
            config = load_config(args.env_file)
            if args.web_config_file:
                config = config.replace(web_config_file=args.web_config_file)
            setup_logging(config)
        return args.func(config, args)
    except ConfigError as exc:
        print(f"configuration error: {printable(exc)}", file=sys.stderr)
        return 2
