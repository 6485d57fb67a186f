#!/usr/bin/python
# Copyright (c) 2026 the pve-datastore-exporter authors
# MIT License (see LICENSE in the collection root)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: datastore_defaults
short_description: Set the default HDD/SSD datastores of a pve-datastore-exporter
version_added: "1.0.0"
description:
  - Reads the current default HDD and SSD datastores from a running pve-datastore-exporter
    (C(GET /api/datastores/default)) and changes them (C(POST /api/datastores/default)) only
    when they differ from the requested ones.
  - The defaults live in the exporter's database. The C(PROXMOX_HDD_DATASTORE) and
    C(PROXMOX_SSD_DATASTORE) settings of its C(.env) only give their initial values, so this module and the
    role's C(.env) template never undo each other.
  - Fails when the exporter answers from its C(.env) fallback (C(source=env), its database cannot be read);
    the defaults it then shows are not the ones set, so nothing can be compared or set.
  - Every datastore ID it sends or is answered must be a Proxmox datastore ID (a letter, then letters, digits,
    C(-), C(_) or C(.), ending in a letter or digit); anything else fails the task, so that no disk option can
    ride on an ID into a play that builds a disk option such as C(scsi0) from it.
  - Speaks HTTPS with a private CA (O(ca_path)) and basic auth (O(url_username)/O(url_password)) to an exporter
    with a web config; the user must then be one of the exporter's C(EXPORTER_WRITE_USERS).
  - Uses only Ansible's own HTTP client; nothing needs to be installed on the target.
author:
  - pve-datastore-exporter team (@pvedx)
options:
  url:
    description:
      - Base URL of the exporter, for example V(http://127.0.0.1:9863).
    type: str
    required: true
  api_token:
    description:
      - "The exporter's C(EXPORTER_API_TOKEN), sent as C(Authorization: Bearer <token>)."
      - Without it the exporter accepts changes from loopback clients only.
      - An exporter with basic auth (C(basic_auth_users) in its web config) does not use the token; give
        O(url_username) and O(url_password) instead.
    type: str
  url_username:
    description:
      - User of HTTP basic auth, sent with the first request, for an exporter whose web config has
        C(basic_auth_users). To change the defaults it must be listed in the exporter's C(EXPORTER_WRITE_USERS).
    type: str
    version_added: "1.2.0"
  url_password:
    description:
      - Password of O(url_username).
    type: str
    version_added: "1.2.0"
  hdd_datastore:
    description:
      - ID of the datastore to make the default HDD datastore.
    type: str
  ssd_datastore:
    description:
      - ID of the datastore to make the default SSD datastore.
    type: str
  validate_certs:
    description:
      - Verify the exporter's TLS certificate when O(url) is C(https).
    type: bool
    default: true
  ca_path:
    description:
      - CA file (PEM) to verify the exporter's certificate with, for a certificate from a private CA.
    type: path
    version_added: "1.2.0"
  client_cert:
    description:
      - Client certificate (PEM) for an exporter that requires one (C(client_auth_type) in its web config).
      - It may hold the key as well; otherwise give O(client_key).
    type: path
    version_added: "1.2.0"
  client_key:
    description:
      - Private key of O(client_cert).
    type: path
    version_added: "1.2.0"
  timeout:
    description:
      - Seconds to wait for each answer of the exporter.
    type: int
    default: 10
notes:
  - At least one of O(hdd_datastore) and O(ssd_datastore) is required.
  - O(api_token) and O(url_username) exclude each other.
  - An unknown datastore fails with the exporter's own message and changes nothing.
attributes:
  check_mode:
    support: full
    description: Reads the current defaults and reports what would change, without changing it.
  diff_mode:
    support: full
    description: Shows the defaults before and after.
  platform:
    support: full
    platforms: posix
    description: Runs on any target that reaches the exporter over HTTP or HTTPS.
"""

EXAMPLES = r"""
- name: Set both defaults on the exporter of this host
  pvedx.datastore_exporter.datastore_defaults:
    url: http://127.0.0.1:9863
    api_token: "{{ exporter_api_token }}"
    hdd_datastore: local-lvm
    ssd_datastore: ceph-vm

- name: Change only the default SSD datastore, from the controller
  pvedx.datastore_exporter.datastore_defaults:
    url: http://exporter.example.org:9863
    api_token: "{{ exporter_api_token }}"
    ssd_datastore: tank
  delegate_to: localhost

- name: An exporter with TLS from a private CA and basic auth (a user of EXPORTER_WRITE_USERS)
  pvedx.datastore_exporter.datastore_defaults:
    url: https://exporter.example.org:9863
    ca_path: /etc/ssl/private-ca.pem
    url_username: ansible
    url_password: "{{ vault_exporter_ansible_password }}"
    hdd_datastore: local-lvm
"""

RETURN = r"""
hdd_datastore:
  description: The default HDD datastore after the module ran (in check mode, the one it would set).
  returned: success
  type: str
  sample: local-lvm
ssd_datastore:
  description: The default SSD datastore after the module ran (in check mode, the one it would set).
  returned: success
  type: str
  sample: ceph-vm
previous:
  description: The defaults before the module ran.
  returned: success
  type: dict
  sample: {"hdd_datastore": "local-lvm", "ssd_datastore": "local"}
source:
  description: Where the exporter read the previous defaults from; always V(db) on success (V(env) fails).
  returned: success
  type: str
  sample: db
message:
  description: The exporter's message about the change.
  returned: changed and not check mode
  type: str
  sample: Default datastores updated
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import fetch_url
from ansible_collections.pvedx.datastore_exporter.plugins.module_utils.exporter_api import (
    ExporterError,
    check_datastore_id,
    request_headers,
)

ROLES = ("hdd_datastore", "ssd_datastore")


def _request(module, method, path, payload=None):
    """Call the exporter; return (status, JSON body or None, raw text, error message)."""
    params = module.params
    url = params["url"].rstrip("/") + path
    # Basic auth goes with the first request (no 401 round trip first); else the bearer token, if any.
    headers = request_headers(params["url_username"], params["url_password"])
    token = params["api_token"]
    if token:
        headers["Authorization"] = "Bearer " + token
    data = None
    if payload is not None:
        data = json.dumps(payload)
        headers["Content-Type"] = "application/json"
    resp, info = fetch_url(module, url, data=data, headers=headers, method=method,
                           timeout=params["timeout"], ca_path=params["ca_path"])
    # On an HTTP error fetch_url hands back the error, already read, with its body in info.
    if "body" in info:
        raw = info["body"]
    else:
        raw = resp.read() if resp is not None else b""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    return info["status"], body, text, info.get("msg", ""), info.get("www-authenticate", "")


def _fail(module, method, path, status, body, text, msg, challenge=""):
    """Turn an exporter error into a clear failure that passes on its message."""
    message = body.get("message") if isinstance(body, dict) else None
    code = body.get("error") if isinstance(body, dict) else None
    where = "%s %s%s" % (method, module.params["url"].rstrip("/"), path)
    if status == -1 or status is None:
        module.fail_json(msg="cannot reach the exporter (%s): %s" % (where, msg), status=status)
    if status in (401, 403):
        user = module.params["url_username"]
        if user:
            rejected = "the exporter rejected user %r" % user
        elif challenge.lower().startswith("basic"):
            rejected = "the exporter wants basic auth (url_username and url_password, a user of EXPORTER_WRITE_USERS)"
        else:
            rejected = "the exporter rejected the API token"
        module.fail_json(msg="%s (HTTP %d, %s): %s" % (rejected, status, code or "auth", message or msg),
                         status=status, error=code)
    if status == 404 and code == "unknown_datastore":
        module.fail_json(msg="unknown datastore: %s" % (message or text), status=status, error=code)
    module.fail_json(msg="the exporter answered HTTP %s to %s: %s"
                     % (status, where, message or text[:200] or msg), status=status, error=code)


def _call(module, method, path, payload=None):
    """Call the exporter and return its JSON body, failing on anything but a success."""
    status, body, text, msg, challenge = _request(module, method, path, payload)
    if status != 200 or not isinstance(body, dict) or body.get("success") is not True:
        _fail(module, method, path, status, body, text, msg, challenge)
    return body


def _check_ids(module, ids, where):
    """Fail unless every datastore ID given or answered (None: no default) is a Proxmox datastore ID."""
    try:
        for role, value in ids.items():
            if value is not None:
                check_datastore_id(value, role + where)
    except ExporterError as exc:
        module.fail_json(msg=str(exc))


def main():
    """Compare the requested defaults with the exporter's and change them only if needed."""
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            api_token=dict(type="str", no_log=True),
            url_username=dict(type="str"),
            url_password=dict(type="str", no_log=True),
            hdd_datastore=dict(type="str"),
            ssd_datastore=dict(type="str"),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            client_cert=dict(type="path"),
            client_key=dict(type="path"),
            timeout=dict(type="int", default=10),
        ),
        required_one_of=[ROLES],
        mutually_exclusive=[("api_token", "url_username")],
        required_by={"url_password": "url_username", "client_key": "client_cert"},
        supports_check_mode=True,
    )
    wanted = dict((role, module.params[role]) for role in ROLES if module.params[role])
    _check_ids(module, wanted, "")
    current = _call(module, "GET", "/api/datastores/default")
    if current.get("source") == "env":
        module.fail_json(msg="the exporter answers from its .env fallback (source: env): it cannot read its "
                             "database, so its defaults (HDD %r, SSD %r) are the configured initial ones, not those "
                             "set; nothing was checked or set: try again once its database is back"
                             % (current.get("hdd_datastore"), current.get("ssd_datastore")), source="env")
    before = dict((role, current.get(role)) for role in ROLES)
    _check_ids(module, before, " in the answer of GET /api/datastores/default")
    after = dict(before, **wanted)
    changed = after != before
    result = dict(changed=changed, previous=before, source=current.get("source"), **after)
    if module._diff:
        result["diff"] = dict(before=before, after=after)
    if changed and not module.check_mode:
        payload = dict((role + "_id", value) for role, value in wanted.items())
        answer = _call(module, "POST", "/api/datastores/default", payload)
        result.update((role, answer.get(role, after[role])) for role in ROLES)
        _check_ids(module, dict((role, result[role]) for role in ROLES), " in the answer of POST /api/datastores/default")
        result["message"] = answer.get("message", "")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
