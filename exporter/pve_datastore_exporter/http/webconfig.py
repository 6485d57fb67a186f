"""The exporter-toolkit web configuration file (`--web.config.file`): TLS, basic auth, headers.

Same keys and meaning as exporter-toolkit's docs/web-configuration.md. What Python's ssl module
cannot do (a client certificate required but not verified, SAN pinning) stops start-up with one
line naming the key: a security setting is never silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
import tempfile
from pathlib import Path

from ..config import ConfigError

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Go's names (crypto/tls) for the TLS 1.2 suites it offers, and OpenSSL's for the same suite.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA", "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256", "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}  # not choosable
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
# Go's ClientAuthType -> Python's verify mode; Python verifies any certificate it asks for.
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
               "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
HEADERS = {"Content-Security-Policy": None, "X-Frame-Options": {"deny", "sameorigin"},
           "X-Content-Type-Options": {"nosniff"}, "X-XSS-Protection": None, "Strict-Transport-Security": None}
KEYS = {"": {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"},
        "tls_server_config": {"cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type",
                              "client_ca_file", "client_allowed_sans", "min_version", "max_version",
                              "cipher_suites", "prefer_server_cipher_suites", "curve_preferences"},
        "http_server_config": {"http2", "headers"}, "rate_limit": {"interval", "burst"}}
BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")
# RFC 9110 field-value: visible ASCII, inner spaces and tabs; no control byte, no edge whitespace.
# (obs-text is refused too: a browser reads it as Latin-1, rarely what the file meant.)
HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")


@dataclasses.dataclass(frozen=True)
class Tls:
    """What the TLS listener needs: PEM files (inline PEM is written to private files) and policy."""

    cert_file: str
    key_file: str
    ca_file: str | None = None
    verify_mode: ssl.VerifyMode = ssl.CERT_NONE
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    ciphers: str | None = None
    prefer_server_ciphers: bool = True
    curve: str | None = None
    inline: tuple[str, ...] = ()  # the private files written for inline PEM (removed once loaded)


@dataclasses.dataclass(frozen=True)
class WebConfig:
    """The parsed file: TLS or None, basic-auth users (name -> bcrypt hash), headers, rate limit."""

    path: str
    tls: Tls | None = None
    users: dict = dataclasses.field(default_factory=dict)
    headers: tuple = ()
    rate_limit: tuple[float, int] | None = None  # (seconds between requests, burst)

    def summary(self) -> str:
        """One line for check-config and the start-up log: what is on, never a secret."""
        tls = (f"TLS {self.tls.min_version.name}..{self.tls.max_version.name}"
               + (", client certificates required" if self.tls.verify_mode == ssl.CERT_REQUIRED else "")
               if self.tls else "no TLS")
        users = f"basic auth for {len(self.users)} user(s)" if self.users else "no basic auth"
        rate = f", at most {self.rate_limit[1]} requests per burst per client" if self.rate_limit else ""
        return f"{tls}, {users}{rate}"


def load(path: str) -> WebConfig:
    """Read and check the file; ConfigError names the first thing wrong, in one line."""
    try:
        import yaml  # only with a web config: a plain `serve` never loads PyYAML
    except ImportError as exc:
        raise ConfigError(f"web config {path}: PyYAML cannot be loaded ({exc})") from None
    try:
        text = Path(path).read_text(encoding="utf-8")
        raw = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"web config {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"web config {path}: not YAML ({str(exc).splitlines()[0]})") from None
    try:
        _check_keys(raw, "")
        base = Path(path).resolve().parent  # relative file names are relative to the file, as in Go
        tls = _tls(raw.get("tls_server_config"), base)
        try:
            return WebConfig(path=path, tls=tls, users=_users(raw.get("basic_auth_users")),
                             headers=_headers(raw.get("http_server_config")), rate_limit=_rate(raw.get("rate_limit")))
        except ValueError:  # the inline key's private file goes with the config that failed
            _remove(tls.inline if tls else ())
            raise
    except ValueError as exc:
        raise ConfigError(f"web config {path}: {exc}") from None


def _check_keys(section, name: str) -> None:
    if section is None:
        return
    if not isinstance(section, dict):
        raise ValueError(f"{name or 'the file'} must be a mapping")
    unknown = sorted(set(map(str, section)) - KEYS[name])
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}" + (f" in {name}" if name else ""))
    for key in KEYS[name] & set(section) & set(KEYS):
        _check_keys(section[key], key)


def _file(value, base: Path, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"tls_server_config.{key} must be a file name")
    file = base / value
    if not os.access(file, os.R_OK):
        raise ValueError(f"tls_server_config.{key}: {file} is missing or unreadable")
    return str(file)


def forget_inline(web: WebConfig) -> None:
    """Remove the private files of inline PEM once OpenSSL has read them."""
    _remove(web.tls.inline if web.tls else ())


def _remove(names) -> None:
    for name in names:
        try:
            os.unlink(name)
        except OSError:
            pass


def _inline(pem, what: str) -> str:
    """Inline PEM as a private file for OpenSSL, which loads keys from files only."""
    if not isinstance(pem, str) or "-----BEGIN" not in pem:
        raise ValueError(f"tls_server_config.{what} must be PEM text")
    fd, name = tempfile.mkstemp(prefix=f"pvedx-{what}-", suffix=".pem")  # mode 0600
    with os.fdopen(fd, "w") as out:
        out.write(pem)
    return name


def _pem_source(tls: dict, base: Path, inline: str, file: str, required: bool) -> str | None:
    if inline in tls and file in tls:
        raise ValueError(f"tls_server_config: give {inline} or {file}, not both")
    if inline in tls:
        return _inline(tls[inline], inline)
    if file in tls:
        return _file(tls[file], base, file)
    if required:
        raise ValueError(f"tls_server_config needs {file} (or {inline})")
    return None


def _tls(tls, base: Path) -> Tls | None:
    if not tls:
        return None
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth == "RequireAnyClientCert":
        raise ValueError("client_auth_type RequireAnyClientCert is not supported (a certificate asked for is "
                         "always verified here): use RequireAndVerifyClientCert")
    if auth not in CLIENT_AUTH:
        raise ValueError(f"client_auth_type {auth!r} is not one of {', '.join(CLIENT_AUTH)}")
    if tls.get("client_allowed_sans"):
        raise ValueError("client_allowed_sans is not supported: issue client certificates from a CA of their own")
    low, high = (_version(tls, "min_version", "TLS12"), _version(tls, "max_version", "TLS13"))
    if low > high:
        raise ValueError("min_version is above max_version")
    policy = dict(verify_mode=CLIENT_AUTH[auth], min_version=low, max_version=high, ciphers=_ciphers(tls),
                  prefer_server_ciphers=_bool(tls.get("prefer_server_cipher_suites", True), "prefer_server_cipher_suites"),
                  curve=_curve(tls))
    sources: dict[str, str | None] = {}
    try:
        for inline, file, required in (("client_ca", "client_ca_file", False), ("cert", "cert_file", True),
                                       ("key", "key_file", True)):
            sources[file] = _pem_source(tls, base, inline, file, required)
        if CLIENT_AUTH[auth] != ssl.CERT_NONE and not sources["client_ca_file"]:
            raise ValueError(f"client_auth_type {auth} needs client_ca_file")
    except ValueError:
        _remove(_written(sources, tls))  # refused: no private copy of a key is left behind
        raise
    return Tls(cert_file=sources["cert_file"], key_file=sources["key_file"], ca_file=sources["client_ca_file"],
               inline=_written(sources, tls), **policy)


def _written(sources: dict, tls: dict) -> tuple[str, ...]:
    return tuple(name for key, name in sources.items() if name and key.removesuffix("_file") in tls)


def _version(tls: dict, key: str, default: str) -> ssl.TLSVersion:
    value = tls.get(key, default)
    if value not in TLS_VERSIONS:
        raise ValueError(f"tls_server_config.{key} {value!r} is not one of {', '.join(TLS_VERSIONS)}")
    return TLS_VERSIONS[value]


def _ciphers(tls: dict) -> str | None:
    suites = tls.get("cipher_suites") or []
    if not isinstance(suites, list):
        raise ValueError("tls_server_config.cipher_suites must be a list")
    unknown = [s for s in suites if s not in CIPHER_SUITES and s not in TLS13_SUITES]
    if unknown:
        raise ValueError(f"tls_server_config.cipher_suites: unknown suite {unknown[0]!r}")
    chosen = [CIPHER_SUITES[s] for s in suites if s in CIPHER_SUITES]
    return ":".join(chosen) or None


def _curve(tls: dict) -> str | None:
    curves = tls.get("curve_preferences") or []
    unknown = [c for c in curves if c not in CURVES] if isinstance(curves, list) else [curves]
    if unknown:
        raise ValueError(f"tls_server_config.curve_preferences: unknown curve {unknown[0]!r}")
    return CURVES[curves[0]] if curves else None  # Python's ssl takes one ECDH curve: the first preferred


def _bool(value, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value


def _users(users) -> dict[str, bytes]:
    if not users:
        return {}
    if not isinstance(users, dict):
        raise ValueError("basic_auth_users must map user names to bcrypt hashes")
    found = {}
    for name, hashed in users.items():
        if not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed):
            raise ValueError(f"basic_auth_users.{name}: not a bcrypt hash (htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        found[str(name)] = hashed.encode()
    return found


def _headers(http) -> tuple:
    http = http or {}
    _bool(http.get("http2", True), "http_server_config.http2")  # accepted; HTTP/1.1 is served either way
    headers = http.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("http_server_config.headers must be a mapping")
    for name, value in headers.items():
        if name not in HEADERS:
            raise ValueError(f"http_server_config.headers: unknown header {name!r}")
        allowed = HEADERS[name]
        if not isinstance(value, str) or value and not HEADER_VALUE.fullmatch(value) \
                or allowed and value.lower() not in allowed:
            raise ValueError(f"http_server_config.headers.{name}: invalid value {value!r} (HTTP allows visible ASCII, "
                             "inner spaces and tabs)")
    return tuple((name, value) for name, value in headers.items() if value)


def _rate(rate) -> tuple[float, int] | None:
    if not rate:
        return None
    interval, burst = _duration(rate.get("interval", "0s")), rate.get("burst", 0)
    if not isinstance(burst, int) or burst < 0:
        raise ValueError("rate_limit.burst must be a whole number")
    return (interval, max(burst, 1)) if interval > 0 else None


def _duration(value) -> float:
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(value).strip())
    if not found:
        raise ValueError(f"rate_limit.interval {value!r} is not a duration such as 1s or 200ms")
    return float(found.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[found.group(2)]

