"""The faults the simulator can switch on while it runs: latency, errors, 401s, offline nodes, hangs, odd text.

Facts about the real API are in docs/proxmox-api.md; the comments name the ones they rely on.
"""

from __future__ import annotations

import dataclasses
import re

from .model import SimError

_NULLABLE = frozenset({"status", "reason", "path", "hang_seconds"})
_FLAGS = frozenset({"auth_fail", "hang", "malformed", "drip"})


@dataclasses.dataclass(frozen=True)
class Faults:
    """Faults switched on while running; each request works on one snapshot."""

    latency_ms: float = 0.0  # added to every API request
    status: int | None = None  # answer this HTTP status instead (e.g. 500, 503)
    reason: str | None = None  # its reason phrase (default: the standard one)
    path: str | None = None  # regex searched in the request path: the faults apply only there
    auth_fail: bool = False  # every token, ticket and password is refused
    offline_nodes: tuple = ()  # nodes taken offline while this fault is set
    offline_delay_ms: float = 0.0  # how long the 595 of an offline node takes
    hang: bool = False  # requests wait until the fault is cleared (or hang_seconds)
    hang_seconds: float | None = None
    malformed: bool = False  # 200 with a truncated, invalid JSON body
    drip: bool = False  # 200 whose body trickles out a byte every 0.2 s (a stuck NFS-bound proxy)
    # (old, new) pairs: every string in an answer, and every item of a comma list, equal to `old`
    # becomes `new` (object keys are kept). Odd text from Proxmox: a node "pve\ud800x" (a lone
    # surrogate, sent as a JSON escape), a type with terminal escapes, an ID of 200,000 characters.
    rename: tuple = ()

    def applies(self, path):
        """Whether these faults apply to a request for `path`."""
        return self.path is None or re.search(self.path, path) is not None

    def changed(self, **changes):
        """A copy with `changes` (from Python or JSON) checked and coerced, or SimError."""
        return dataclasses.replace(self, **{key: _fault_value(key, value) for key, value in changes.items()})

    def as_json(self):
        """The faults as a JSON-ready dict."""
        faults = dataclasses.asdict(self)
        faults["offline_nodes"] = list(faults["offline_nodes"])
        faults["rename"] = dict(faults["rename"])
        return faults

    def rewrite(self, data):
        """An answer's data with the `rename` fault applied (the data itself when there is none)."""
        return _renamed(data, dict(self.rename)) if self.rename else data


def _renamed(data, names):
    """`data` with every string, and every item of a comma list, found in `names` replaced."""
    if isinstance(data, str):
        return ",".join(names.get(part, part) for part in data.split(",")) if "," in data else names.get(data, data)
    if isinstance(data, list):
        return [_renamed(item, names) for item in data]
    if isinstance(data, dict):
        return {key: _renamed(value, names) for key, value in data.items()}
    return data


def _names(value):
    """The `rename` fault: {"old": "new", ...} (or pairs) as a tuple of string pairs; None clears it."""
    pairs = tuple(dict(value or {}).items())
    if not all(isinstance(old, str) and isinstance(new, str) for old, new in pairs):
        raise TypeError("rename maps strings to strings")
    return pairs


def _fault_value(key, value):
    """Check and coerce one fault setting, or raise SimError."""
    fields = [f.name for f in dataclasses.fields(Faults)]
    if key not in fields:
        raise SimError(f"unknown fault '{key}' (known: {', '.join(fields)})")
    if value is None and key in _NULLABLE:
        return None
    try:
        if key == "offline_nodes":
            return tuple(str(n) for n in ([value] if isinstance(value, str) else value))
        if key == "rename":
            return _names(value)
        if key in _FLAGS:
            return bool(value)
        if key == "status" and not 400 <= int(value) <= 599:
            raise ValueError("status must be 400..599")
        if key == "path":
            re.compile(value)
        return {"status": int, "reason": str, "path": str}.get(key, float)(value)
    except (TypeError, ValueError, re.error) as exc:
        raise SimError(f"bad value for fault '{key}': {exc}") from None
