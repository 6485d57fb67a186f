# Copyright (c) 2026 the pve-datastore-exporter authors
# MIT License (see LICENSE in the collection root)

from __future__ import annotations

DOCUMENTATION = r"""
name: bcrypt_hash
short_description: A bcrypt hash of a password for a web config's basic_auth_users, kept while it still fits
version_added: "1.2.0"
description:
  - Hashes a password with bcrypt, as exporter-toolkit's web configuration file (C(basic_auth_users)) wants it.
  - Given the hash already in use (O(keep)), returns that hash unchanged when it verifies the password, so a
    new random salt on every run does not rewrite the file (a second run reports C(changed=0)); a new hash
    only when the password changed or there was none.
  - Runs on the controller like every filter and needs the Python package C(bcrypt) there
    (C(pip install bcrypt)); Ansible's own C(password_hash('bcrypt')) would need C(passlib).
author:
  - pve-datastore-exporter team (@pvedx)
options:
  _input:
    description: The password, at most 72 bytes in UTF-8 (bcrypt reads no further).
    type: string
    required: true
  keep:
    description: The bcrypt hash in use so far (for example read back from the target); kept if it verifies the password.
    type: string
  rounds:
    description: bcrypt's cost factor for a new hash (2^rounds iterations), 4 to 31.
    type: integer
    default: 10
"""

EXAMPLES = r"""
- name: A hash for the web config
  ansible.builtin.debug:
    msg: "{{ vault_prometheus_password | pvedx.datastore_exporter.bcrypt_hash }}"

- name: The same hash as last time unless the password changed
  ansible.builtin.debug:
    msg: "{{ vault_prometheus_password | pvedx.datastore_exporter.bcrypt_hash(keep=old_web_config.basic_auth_users.prometheus) }}"
"""

RETURN = r"""
_value:
  description: A bcrypt hash (C($2b$10$...)), O(keep) itself when it verifies the password.
  type: string
"""

import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_bytes, to_text

try:
    import bcrypt
except ImportError as exc:  # the filter says so when it is used, not when Ansible loads it
    bcrypt = None
    BCRYPT_IMPORT_ERROR = exc
else:
    BCRYPT_IMPORT_ERROR = None

# The hashes exporter-toolkit (and pve-datastore-exporter) accept.
HASH = re.compile(r"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")


def bcrypt_hash(password, keep=None, rounds=10):
    """The kept hash when it verifies `password`, else a new bcrypt hash with `rounds`."""
    if bcrypt is None:
        raise AnsibleFilterError("pvedx.datastore_exporter.bcrypt_hash needs the Python package bcrypt on the "
                                 "controller (pip install bcrypt): %s" % BCRYPT_IMPORT_ERROR)
    if not isinstance(password, str):
        raise AnsibleFilterError("bcrypt_hash: the password must be a string, not %s" % type(password).__name__)
    secret = to_bytes(password, errors="surrogate_or_strict")
    if len(secret) > 72:
        raise AnsibleFilterError("bcrypt_hash: the password is %d bytes long; bcrypt takes at most 72" % len(secret))
    if b"\0" in secret:
        raise AnsibleFilterError("bcrypt_hash: the password holds a NUL byte, which bcrypt cannot take")
    try:
        rounds = int(rounds)
    except (TypeError, ValueError):
        raise AnsibleFilterError("bcrypt_hash: rounds must be a whole number, not %r" % (rounds,)) from None
    if not 4 <= rounds <= 31:
        raise AnsibleFilterError("bcrypt_hash: rounds must be 4 to 31, not %d" % rounds)
    if isinstance(keep, str) and HASH.match(keep):
        try:
            if bcrypt.checkpw(secret, keep.encode("ascii")):
                return keep
        except ValueError:
            pass  # a hash bcrypt cannot read: make a new one
    return to_text(bcrypt.hashpw(secret, bcrypt.gensalt(rounds)))


class FilterModule:
    """bcrypt_hash."""

    def filters(self):
        return {"bcrypt_hash": bcrypt_hash}
