"""What a client sends: the one request body the API takes, validated, and the error a bad request gets."""

from __future__ import annotations

import json

from .. import i18n
from ..config import DATASTORE_ID

MAX_BODY = 16 * 1024
DEFAULT_FIELDS = {"hdd_datastore_id": "hdd", "ssd_datastore_id": "ssd"}


class ApiError(Exception):
    """An answer in the error envelope: a status, a machine code and a sentence."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def parse_defaults_body(raw: bytes) -> dict[str, str]:
    """Validate the POST body; return {"hdd": id, "ssd": id} with at least one of them."""
    try:
        body = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "invalid_json", i18n.gettext("The request body is not valid JSON.")) from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", i18n.gettext(
            "The request body must be a JSON object with hdd_datastore_id and/or ssd_datastore_id."))
    unknown = sorted(set(body) - set(DEFAULT_FIELDS))
    if unknown:
        raise ApiError(400, "invalid_field", i18n.gettext(
            "Unknown field(s): %(fields)s; expected hdd_datastore_id and/or ssd_datastore_id.", fields=", ".join(unknown)))
    chosen = {}
    for field, kind in DEFAULT_FIELDS.items():
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, str) or not DATASTORE_ID.fullmatch(value):
            raise ApiError(400, "invalid_field", i18n.gettext("%(field)s must be a Proxmox datastore ID "
                           "(letters, digits, '-', '_', '.', at least 2 characters).", field=field))
        chosen[kind] = value
    if not chosen:
        raise ApiError(400, "invalid_field", i18n.gettext("Give hdd_datastore_id and/or ssd_datastore_id."))
    return chosen
