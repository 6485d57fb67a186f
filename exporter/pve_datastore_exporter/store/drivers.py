"""peewee imported without psycopg2, which is bound in when a PostgreSQL database is opened.

peewee imports every driver it knows at import time; psycopg2-binary maps libpq, its own libssl and
libcrypto, Kerberos and LDAP (~4.6 MB resident) into a SQLite `serve` that never uses them.
"""

from __future__ import annotations

import sys

_HIDDEN = "psycopg2"


def _import_peewee():
    """peewee and the playhouse modules the store uses, imported while psycopg2 cannot be found."""
    hide = _HIDDEN not in sys.modules
    if hide:
        sys.modules[_HIDDEN] = None  # `import psycopg2` raises ImportError: peewee records "no driver"
    try:
        import peewee
        import playhouse.db_url
        import playhouse.migrate  # noqa: F401 - imported here so that it too finds no psycopg2
    finally:
        if hide:
            del sys.modules[_HIDDEN]
    return peewee


peewee = _import_peewee()


def bind_psycopg2() -> None:
    """Give peewee psycopg2 as its own import would have (peewee 4.5's module globals); before PostgreSQL is opened."""
    if peewee.psycopg2 is not None:
        return
    import psycopg2
    from psycopg2 import extensions
    from psycopg2.extras import Json, register_uuid

    register_uuid()
    peewee.psycopg2, peewee.pg_extensions, peewee.pg_register_uuid, peewee.Json_pg2 = (
        psycopg2, extensions, register_uuid, Json)
    adapter = peewee.Psycopg2Adapter  # its class body reads these only when psycopg2 was found
    adapter.txn_idle = extensions.TRANSACTION_STATUS_IDLE
    adapter.txn_inerror = extensions.TRANSACTION_STATUS_INERROR
    adapter.txn_unknown = extensions.TRANSACTION_STATUS_UNKNOWN
