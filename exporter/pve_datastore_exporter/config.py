"""The one reader of the environment and `.env`: a table of settings frozen into a Config."""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values

# Proxmox's storage ID rule (PVE::JSONSchema::parse_id): case-insensitive, at least 2 characters.
DATASTORE_ID = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.IGNORECASE | re.ASCII)  # use fullmatch
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A setting has a value the exporter cannot use; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    """One environment variable: its default, help line and parser."""

    env: str
    field: str
    default: str
    help: str
    parse: Callable[[str], object]
    secret: bool = False


def _text(value: str) -> str:
    return value.strip()


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"expected a whole number from {low} to {high}") from None
        if not low <= number <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return number

    return parse


def _datastore_id(value: str) -> str:
    value = value.strip()
    if not DATASTORE_ID.fullmatch(value):
        raise ValueError("expected a Proxmox storage ID (letters, digits, - _ ., at least 2 characters)")
    return value


def _host(value: str) -> str:
    value = value.strip()
    if value and ("/" in value or " " in value):
        raise ValueError("expected a host name or host:port, without a scheme or path")
    return value


def parse_listen_address(value: str) -> tuple[str, int]:
    """Split `host:port` (IPv6 as `[::1]:port`) and check both parts."""
    value = value.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port, e.g. 0.0.0.0:9863 or [::1]:9863")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not re.match(r"^[A-Za-z0-9.\-]+$", host):
            raise ValueError("expected host:port, e.g. 0.0.0.0:9863 or [::1]:9863") from None
    return host, int(port)


def _listen(value: str) -> str:
    parse_listen_address(value)
    return value.strip()


DATABASE_DRIVERS = {"sqlite": None, "postgres": "psycopg2", "postgresql": "psycopg2"}


def _database_url(value: str) -> str:
    value = value.strip()
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in DATABASE_DRIVERS:
        raise ValueError("expected sqlite:///path/to/file.db or postgresql://user:password@host/name")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if scheme == "sqlite" and parts.query:
        raise ValueError("a sqlite URL takes no ?parameters here")
    if scheme != "sqlite" and not parts.path.lstrip("/"):
        raise ValueError("the database's name is missing: expected postgresql://user:password@host/name")
    driver = DATABASE_DRIVERS[scheme]
    if driver and importlib.util.find_spec(driver) is None:
        raise ValueError(f"{scheme} needs the {driver} package: pip install 'pve-datastore-exporter[postgres]'")
    return value


# A database URL's secrets, found without urlsplit so that a URL too broken to parse is masked too:
# the userinfo's password runs to the LAST "@" (a password may hold "@" or "/"), and libpq also
# takes `password=` as a query parameter.
_URL_USERINFO = re.compile(r"^([a-z0-9+.\-]+://[^:/@?#]*:)(.*)(@[^@]*)$", re.IGNORECASE | re.DOTALL)
_URL_PASSWORD_PARAM = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)
_URL_SCHEME = re.compile(r"^[a-z0-9+.\-]+://", re.IGNORECASE)


def database_passwords(url: str) -> list[str]:
    """Every password inside a database URL, as written and as decoded (secrets like the others)."""
    found = _URL_PASSWORD_PARAM.findall(url)
    userinfo = _URL_USERINFO.match(url)
    written = [p for p in [userinfo.group(2) if userinfo else "", *(value for _, value in found)] if p]
    return list(dict.fromkeys(written + [unquote(p) for p in written]))


def mask_url(url: str) -> str:
    """The URL with every password replaced by ***; one with no scheme:// but an "@" is masked whole."""
    if not _URL_SCHEME.match(url) and "@" in url:
        return "***"
    url = _URL_USERINFO.sub(lambda m: f"{m.group(1)}***{m.group(3)}" if m.group(2) else m.group(0), url)
    return _URL_PASSWORD_PARAM.sub(lambda m: f"{m.group(1)}***", url)


# The shortest piece of a secret that scrub() masks: any run of at least this many of a secret's characters
# (its start, end or middle: an echo cut anywhere). Shorter pieces occur in ordinary text ("Pro***mo***"
# for a 1-character password), so a shorter secret is masked only whole, and only from SCRUB_WHOLE
# characters up: a 1-3 character secret cannot be told from ordinary text (use longer secrets).
SCRUB_MIN = 8
SCRUB_WHOLE = 4


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Mask, in any letter case, every run of SCRUB_MIN or more characters of a secret, and a shorter secret whole."""
    pieces = {s[i:i + SCRUB_MIN].lower() for s in secrets for i in range(len(s) - SCRUB_MIN + 1)}
    short = {s.lower() for s in secrets if SCRUB_WHOLE <= len(s) < SCRUB_MIN}
    if not pieces and not short:
        return text
    masked = bytearray(len(text))  # 1 where a character is inside a piece of a secret
    lowered = text.lower()
    for i in range(len(text) - SCRUB_MIN + 1):
        if lowered[i:i + SCRUB_MIN] in pieces:
            masked[i:i + SCRUB_MIN] = b"\x01" * SCRUB_MIN
    for secret in short:
        for found in re.finditer(re.escape(secret), lowered):
            masked[found.start():found.end()] = b"\x01" * len(secret)
    runs = re.finditer(r"\x01+", masked.decode("latin-1"))
    out, at = [], 0
    for run in runs:
        out += [text[at:run.start()], "***"]
        at = run.end()
    return "".join(out) + text[at:]


def _names(value: str) -> str:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if any(not re.fullmatch(r"[^\s:]+", n) for n in names):
        raise ValueError("expected user names separated by commas (no spaces or colons in a name)")
    return ",".join(names)


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError("expected one of " + ", ".join(LOG_LEVELS))
    return level


# To add a setting: one Setting row here (Config grows the field by itself), then `make docs` for
# .env.example and the README table, then the Ansible role's variable (tests/test_ansible_static.py).
SETTINGS: tuple[Setting, ...] = (
    Setting("PROXMOX_HOST", "proxmox_host", "", "host or host:port of any cluster node (required outside demo)", _host),
    Setting("PROXMOX_PORT", "proxmox_port", "8006", "Proxmox API port (a port inside PROXMOX_HOST wins)", _int_range(1, 65535)),
    Setting("PROXMOX_USER", "proxmox_user", "", "user@realm, e.g. monitor@pve (the role PVEAuditor is enough)", _text),
    Setting("PROXMOX_TOKEN_NAME", "proxmox_token_name", "", "API token name only, not user!name; preferred over a password", _text),
    Setting("PROXMOX_TOKEN_VALUE", "proxmox_token_value", "", "API token secret (UUID)", _text, secret=True),
    Setting("PROXMOX_PASSWORD", "proxmox_password", "", "password login, used only when no token is set", _text, secret=True),
    Setting("PROXMOX_VERIFY_SSL", "proxmox_verify_ssl", "true", "verify the cluster's TLS certificate; false logs a warning", _bool),
    Setting("PROXMOX_CA_BUNDLE", "proxmox_ca_bundle", "", "CA file for a private CA, e.g. a copy of /etc/pve/pve-root-ca.pem", _text),
    Setting("PROXMOX_TIMEOUT", "proxmox_timeout", "10", "seconds per Proxmox API call", _int_range(1, 300)),
    Setting("PROXMOX_CLUSTER_NAME", "proxmox_cluster_name", "",
            "the pve_cluster label and the answers' cluster; unset = read from /cluster/status (needs Sys.Audit)", _text),
    Setting("PROXMOX_HDD_DATASTORE", "hdd_datastore", "local-lvm", "initial default HDD datastore (then kept in the DB)", _datastore_id),
    Setting("PROXMOX_SSD_DATASTORE", "ssd_datastore", "local", "initial default SSD datastore (then kept in the DB)", _datastore_id),
    Setting("DATABASE_URL", "database_url", "sqlite:///instance/proxmox_manager.db",
            "sqlite:///relative/path, sqlite:////absolute/path or postgresql://user:password@host/name"
            " (PostgreSQL needs the postgres extra)", _database_url),
    Setting("EXPORTER_LISTEN_ADDRESS", "listen_address", "0.0.0.0:9863", "host:port where HTTP is served ([::1]:9863 for IPv6)", _listen),
    Setting("EXPORTER_REFRESH_INTERVAL", "refresh_interval", "60",
            "seconds between refreshes from Proxmox; 0 = only on demand (POST /api/datastores/refresh)", _int_range(0, 86400)),
    Setting("EXPORTER_EXACT_AVAILABLE", "exact_available", "false",
            "also read /nodes/{node}/storage, one call per online node per refresh, for Proxmox's own avail", _bool),
    Setting("EXPORTER_POOLS_INTERVAL", "pools_interval", "300",
            "seconds between reads of each online node's thin pools and zpools (metadata fill, pool health); 0 = off",
            _int_range(0, 86400)),
    Setting("EXPORTER_DISKS_INTERVAL", "disks_interval", "0",
            "seconds between reads of each online node's disks (SMART health, SSD wear); 0 = off: each read runs "
            "smartctl on every disk, which wakes idle HDDs", _int_range(0, 86400)),
    Setting("EXPORTER_PROVISIONED_INTERVAL", "provisioned_interval", "0",
            "seconds between reads of the space promised to guests' disks per thin-capable datastore; 0 = off "
            "(needs Datastore.Allocate, or Datastore.Audit with VM.Config.Disk)", _int_range(0, 86400)),
    Setting("EXPORTER_API_TOKEN", "api_token", "", "bearer token for POST endpoints; unset = loopback clients only", _text, secret=True),
    Setting("EXPORTER_LOG_LEVEL", "log_level", "INFO", "log level: " + ", ".join(LOG_LEVELS), _log_level),
    Setting("EXPORTER_WEB_CONFIG_FILE", "web_config_file", "",
            "exporter-toolkit web config (TLS, basic auth, headers); also --web.config.file", _text),
    Setting("EXPORTER_WRITE_USERS", "write_users", "",
            "with basic auth: the users (comma list) who may change defaults and refresh", _names),
    Setting("EXPORTER_MAX_CONNECTIONS_PER_CLIENT", "max_connections_per_client", "64",
            "open connections one client address (an IPv6 /64) may hold; more are closed at once; 0 = no cap"
            " (behind a reverse proxy every client is the proxy)", _int_range(0, 100000)),
)


# Containers' secrets (docker/podman secrets, Kubernetes Secrets mounted as files): every secret setting,
# and DATABASE_URL (it holds the database's password), may instead be read from the file named by
# NAME_FILE, as the official images of PostgreSQL and others do. Derived from the table, never listed twice.
FILE_SETTINGS: tuple[str, ...] = tuple(s.env for s in SETTINGS if s.secret) + ("DATABASE_URL",)


def file_variant(env: str) -> str:
    """The variable naming a file that holds `env`'s value: PROXMOX_PASSWORD -> PROXMOX_PASSWORD_FILE."""
    return f"{env}_FILE"


def _from_files(sources: list[tuple[str, Mapping[str, str | None]]]) -> dict[str, str]:
    """The values of FILE_SETTINGS, each from the first source (environment, then `.env`) setting NAME or NAME_FILE.

    NAME in one source and NAME_FILE in another is no conflict: the first source wins, as for any setting.
    Both in one source is (ConfigError naming the source, never a value), even in a source that does not win.
    """
    read = {}
    for env in FILE_SETTINGS:
        chosen = []
        for where, values in sources:
            direct, path = ((values.get(name) or "").strip() for name in (env, file_variant(env)))
            if direct and path:
                raise ConfigError(f"{env} and {file_variant(env)} are both set {where}; set one of them")
            if direct or path:
                chosen.append((values[env], None) if direct else (None, path))
        if chosen:
            value, path = chosen[0]
            read[env] = value if path is None else _read_secret_file(env, path)
    return read


def _read_secret_file(env: str, path: str) -> str:
    """NAME_FILE's file, its trailing newline stripped; ConfigError naming the file, never what it holds."""
    try:
        with open(path, encoding="utf-8") as stream:
            content = stream.read()
    except OSError as exc:
        raise ConfigError(f"{file_variant(env)}: cannot read {path} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file_variant(env)}: {path} is not UTF-8 text") from None
    return content.removesuffix("\n").removesuffix("\r")


class _ConfigMethods:
    """What a Config does beyond holding the settings; its fields are made from SETTINGS below."""

    def replace(self, **changes) -> Config:
        """A copy with some settings changed (used by demo and tests)."""
        return dataclasses.replace(self, **changes)

    @property
    def refresh_deadline(self) -> int:
        """Seconds a whole read of Proxmox may take: two calls and a login, PROXMOX_TIMEOUT each, then
        the extra calls (the cluster's name, each node's storage), all at once within one more, + 5.

        requests' timeout bounds each socket read, not a call: a body dripping a byte a second never ends.
        """
        extra = self.exact_available or not self.proxmox_cluster_name
        return (4 if extra else 3) * self.proxmox_timeout + 5

    def secrets(self) -> tuple[str, ...]:
        """The secret values in force, for scrubbing them out of messages."""
        found = [getattr(self, s.field) for s in SETTINGS if s.secret] + database_passwords(self.database_url)
        return tuple(value for value in found if value)

    def check_proxmox(self) -> None:
        """Raise ConfigError unless enough is set to talk to a real cluster."""
        if not self.proxmox_host:
            raise ConfigError("PROXMOX_HOST: not set; expected the host or host:port of a cluster node")
        if not self.proxmox_user:
            raise ConfigError("PROXMOX_USER: not set; expected user@realm, e.g. monitor@pve")
        if "@" not in self.proxmox_user:
            raise ConfigError("PROXMOX_USER: expected user@realm, e.g. monitor@pve (the realm is required)")
        if "!" in self.proxmox_token_name:
            raise ConfigError("PROXMOX_TOKEN_NAME: expected the token name alone, not user!name")
        if self.proxmox_token_name and not self.proxmox_token_value:
            raise ConfigError("PROXMOX_TOKEN_VALUE: not set while PROXMOX_TOKEN_NAME is")
        if self.proxmox_ca_bundle and not os.access(self.proxmox_ca_bundle, os.R_OK):
            raise ConfigError(f"PROXMOX_CA_BUNDLE: cannot read {self.proxmox_ca_bundle}; expected a PEM file")
        if not self.proxmox_token_name and not self.proxmox_password:
            raise ConfigError("PROXMOX_TOKEN_NAME: not set; expected an API token (or PROXMOX_PASSWORD)")


def _field(setting: Setting) -> tuple[str, type, dataclasses.Field]:
    """A Config field: the default parsed like a value from the environment, secrets kept out of repr()."""
    default = setting.parse(setting.default)
    return setting.field, type(default), dataclasses.field(default=default, repr=not setting.secret)


# One field per SETTINGS row, in order: a field without a setting cannot exist, a bad default fails at import.
Config = dataclasses.make_dataclass(
    "Config", [_field(s) for s in SETTINGS], bases=(_ConfigMethods,), frozen=True,
    namespace={"__module__": __name__, "__doc__": "The effective settings, parsed and frozen at start."},
)


def load(env_file: str | None = ".env", environ: Mapping[str, str] | None = None) -> Config:
    """Read `.env` then the environment (which wins) and parse every setting."""
    environ = os.environ if environ is None else environ
    values: dict[str, str | None] = {}
    if env_file and os.path.isfile(env_file):
        try:
            values.update(dotenv_values(env_file))
        except UnicodeDecodeError:
            raise ConfigError(f"--env-file: {env_file} is not UTF-8 text") from None
    from_files = _from_files([("in the environment", environ), (f"in {env_file}", values)])
    # An empty variable in the environment (e.g. `PROXMOX_HOST=` from compose) does not hide the file's.
    values.update({s.env: environ[s.env] for s in SETTINGS if environ.get(s.env, "").strip()})
    values.update(from_files)
    parsed = {}
    for setting in SETTINGS:
        raw = values.get(setting.env)
        raw = setting.default if raw is None or raw.strip() == "" else raw
        try:
            parsed[setting.field] = setting.parse(raw)
        except ValueError as exc:
            shown = "***" if setting.secret else repr(mask_url(raw) if setting.env == "DATABASE_URL" else raw)
            raise ConfigError(f"{setting.env}: invalid value {shown}; {exc}") from None
    return Config(**parsed)


def describe(config: Config) -> list[tuple[str, str, str]]:
    """(variable, effective value with secrets masked, help) for check-config."""
    rows = []
    for setting in SETTINGS:
        value = getattr(config, setting.field)
        if setting.secret:
            shown = "***" if value else "(unset)"
        elif setting.env == "DATABASE_URL":
            shown = mask_url(value)
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        else:
            shown = str(value) if value != "" else "(unset)"
        rows.append((setting.env, shown, setting.help))
    return rows
