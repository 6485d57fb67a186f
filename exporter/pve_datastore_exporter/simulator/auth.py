"""The simulator's credentials: its throw-away TLS certificates and pve's token and ticket checks.

Facts about the real API are in docs/proxmox-api.md; the comments name the ones they rely on.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import os
import random
import re
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

AUTH_FAILED = "Authentication failed!"  # pve-manager >= 9.1.5 no longer says why


# -- certificates --------------------------------------------------------------------------


class CertPaths(NamedTuple):
    """Where the throw-away CA and the server certificate live."""

    ca: Path
    cert: Path
    key: Path


def ensure_certificates(state_dir):
    """CA + server certificate (SAN IP:127.0.0.1, DNS:localhost) in state_dir, made once."""
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(state / "ca.pem", state / "server.pem", state / "server.key")
    with open(state / ".certs.lock", "w") as lock:  # parallel simulators may share a state_dir
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _certificates_valid(paths):
            _make_certificates(paths)
    return paths


def _openssl(*args, cwd=None):
    """Run the openssl command line; True when it exits 0."""
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    return done.returncode == 0, done.stdout


def _certificates_valid(paths):
    """All three files exist, chain to the CA, stay valid a day, name 127.0.0.1, and match."""
    if not all(p.is_file() for p in paths):
        return False
    verified, _ = _openssl("verify", "-CAfile", str(paths.ca), str(paths.cert))
    fresh, _ = _openssl("x509", "-checkend", "86400", "-noout", "-in", str(paths.cert))
    named, san = _openssl("x509", "-noout", "-ext", "subjectAltName", "-in", str(paths.cert))
    if not (verified and fresh and named and "127.0.0.1" in san and "DNS:localhost" in san):
        return False
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(paths.cert, paths.key)
    except (ssl.SSLError, OSError):
        return False
    return True


def _make_certificates(paths):
    """A fresh EC CA and a server certificate signed by it; the CA key is thrown away."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    with tempfile.TemporaryDirectory(dir=paths.ca.parent) as tmp:
        Path(tmp, "server.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
        steps = [
            ("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650",
             "-subj", "/CN=pve-datastore-exporter simulator CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
            ("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"),
            ("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "825",
             "-set_serial", str(random.getrandbits(63)), "-extfile", "server.ext", "-out", "server.pem"),
        ]
        for step in steps:
            done = subprocess.run(["openssl", *step], cwd=tmp, capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"openssl {step[0]} failed: {done.stderr.strip()}")
        os.chmod(Path(tmp, "server.key"), 0o600)
        for name, target in zip(("ca.pem", "server.pem", "server.key"), paths, strict=True):
            os.replace(Path(tmp, name), target)


# -- auth ----------------------------------------------------------------------------------


class Auth:
    """API token and ticket checks the way pve's auth handler does them (docs/proxmox-api.md#api-token)."""

    def __init__(self, user, token_name, token_value, password, clock=time.time):
        self.user, self.token_id = user, f"{user}!{token_name}"
        self.token_value, self.password, self._clock = token_value, password, clock
        self._secret = os.urandom(32)  # tickets do not survive a restart, like a new authkey

    def check(self, headers):
        """None when the request is authenticated, else the 401 reason phrase."""
        authorization = headers.get("Authorization", "")
        ticket = _cookie(headers.get("Cookie", ""), "PVEAuthCookie")
        if ticket is None and authorization.startswith("PVEAuthCookie="):
            ticket = unquote(authorization[len("PVEAuthCookie="):])
        if ticket is not None:  # a PVEAuthCookie wins over a token
            return None if self._ticket_ok(ticket) else AUTH_FAILED
        token = re.match(r"PVEAPIToken[= ](.*)", authorization, re.DOTALL)
        if token is None:
            return "No ticket"
        # The value is URL-unescaped and cut at the first ';'; id and secret split at the LAST '='.
        token_id, _, secret = unquote(token[1]).split(";", 1)[0].rpartition("=")
        good = hmac.compare_digest(token_id, self.token_id) & hmac.compare_digest(secret, self.token_value)
        return None if good else AUTH_FAILED

    def login(self, form):
        """The POST /access/ticket data for a good password or live ticket, else None (docs/proxmox-api.md#tickets)."""
        user = form.get("username", "")
        if "@" not in user and form.get("realm"):
            user = f"{user}@{form['realm']}"
        password = form.get("password", "")
        # A live ticket works as the password: that is how clients renew it.
        good = hmac.compare_digest(password, self.password) or self._ticket_ok(password)
        if user != self.user or not good:
            return None
        stamp = f"{int(self._clock()):08X}"
        return {"username": user, "ticket": f"PVE:{user}:{stamp}::{self._sign(f'PVE:{user}:{stamp}')}",
                "CSRFPreventionToken": f"{stamp}:{self._sign(f'{stamp}:{user}')}",
                "cap": {"storage": {"Datastore.Audit": 1}, "nodes": {"Sys.Audit": 1}, "dc": {"Sys.Audit": 1},
                        "access": {}, "vms": {}, "sdn": {}, "mapping": {}}}

    def _ticket_ok(self, ticket):
        """A ticket we signed, for our user, at most 2 h old."""
        match = re.fullmatch(r"(PVE:([^:]+):([0-9A-F]{8}))::(.+)", ticket)
        if not match or not hmac.compare_digest(match[4], self._sign(match[1])):
            return False
        return match[2] == self.user and -300 <= self._clock() - int(match[3], 16) <= 7200

    def _sign(self, text):
        """A base64 HMAC standing in for pve's RSA ticket signature."""
        return base64.b64encode(hmac.new(self._secret, text.encode(), hashlib.sha256).digest()).decode()


def _cookie(header, name):
    """One cookie's URL-unescaped value from a Cookie header, or None."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return unquote(value)
    return None
