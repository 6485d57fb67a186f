"""The JSON answers of the API and of `list --json`, built from a View with plain Python (no Flask).

The page renders the same dicts (http/app.py). Warnings about the defaults are records with a code:
the JSON says them in English (WARNINGS), the page and the Korean answers translate them by code
(i18n.warning).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import NamedTuple

from .records import View


def N_(message: str) -> str:
    """Mark a message for extraction (gettext's name, which Babel looks for); i18n translates it where it is shown."""
    return message


# A default that points nowhere useful, by code: the JSON's English sentence, the catalogue's msgid.
WARNINGS = {
    "no_default": N_("no default %(role)s datastore is set"),
    "missing": N_("default %(role)s datastore '%(id)s' does not exist in the cluster"),
    "disabled": N_("default %(role)s datastore '%(id)s' is disabled or gone from the cluster"),
    "inactive": N_("default %(role)s datastore '%(id)s' is not active on any node"),
}


class DefaultWarning(NamedTuple):
    """A default HDD/SSD datastore that points nowhere useful: a code of WARNINGS and its figures."""

    code: str
    kind: str  # "HDD" or "SSD", as the sentences say it (their placeholder keeps its old name, %(role)s)
    datastore: str | None = None

    def values(self) -> dict[str, str]:
        """The sentence's placeholders."""
        return {"role": self.kind, "id": self.datastore or ""}

    def english(self) -> str:
        """The sentence the JSON carries."""
        return WARNINGS[self.code] % self.values()


def default_warnings(view: View) -> list[DefaultWarning]:
    """What is wrong with the defaults of `view`, HDD first."""
    found = []
    for kind, datastore_id in (("HDD", view.default_hdd), ("SSD", view.default_ssd)):
        if not datastore_id:
            found.append(DefaultWarning("no_default", kind))
            continue
        row = view.row(datastore_id)
        if row is None or row.type == "unknown" and not row.nodes:
            found.append(DefaultWarning("missing", kind, datastore_id))
        elif not row.enabled:
            found.append(DefaultWarning("disabled", kind, datastore_id))
        elif not row.active:
            found.append(DefaultWarning("inactive", kind, datastore_id))
    return found


def error_body(code: str, message: str) -> dict:
    """The one error shape of every JSON error."""
    return {"success": False, "error": code, "message": message}


def encoded(answer: dict) -> bytes:
    """An answer's bytes as the Flask app sends them (compact, ASCII, a final newline): the front's answers match."""
    return json.dumps(answer, separators=(",", ":")).encode() + b"\n"


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")


def refresh_answer(view: View, age: float | None) -> dict:
    """The `last_refresh` object: when, whether it worked, how old the data is."""
    info = view.refresh
    return {"ok": info.ok, "last_attempt": _iso(info.last_attempt), "last_success": _iso(info.last_success),
            "age_seconds": None if age is None else round(age, 3), "error": info.error, "reason": info.reason}


def _warnings(view: View) -> list[str]:
    return [w.english() for w in default_warnings(view)]


def summary_answer(view: View, age: float | None) -> dict:
    """GET /api/datastores without the list: the defaults, the cluster, the source, the warnings, the data's age."""
    return {"default_hdd": view.default_hdd, "default_ssd": view.default_ssd, "cluster": view.cluster, "source": view.source,
            "role": view.role, "warnings": _warnings(view), "last_refresh": refresh_answer(view, age)}


def datastores_answer(view: View, age: float | None) -> dict:
    """GET /api/datastores: the seed's keys first, then ours. The page renders the same dict."""
    # Imported here: risk_answers builds on this module (N_), which must not import it at the top.
    from .risk_answers import datastore_keys, disk_risks, disks_answer, reads_answer

    return {"success": True, "datastores": [datastore_keys(view, d, d.as_dict()) for d in view.enabled],
            **summary_answer(view, age), "disks": disks_answer(view),
            "disk_risks": [r.english() for r in disk_risks(view)], "node_reads": reads_answer(view)}


def defaults_answer(view: View) -> dict:
    """GET /api/datastores/default: the defaults alone, for idempotent clients (the view is loaded all the same)."""
    return {"success": True, "hdd_datastore": view.default_hdd, "ssd_datastore": view.default_ssd,
            "cluster": view.cluster, "source": view.source, "role": view.role, "warnings": _warnings(view)}
