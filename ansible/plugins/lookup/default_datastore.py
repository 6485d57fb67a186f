# Copyright (c) 2026 the pve-datastore-exporter authors
# MIT License (see LICENSE in the collection root)

from __future__ import annotations

DOCUMENTATION = r"""
name: default_datastore
author:
  - pve-datastore-exporter team (@pvedx)
version_added: "1.1.0"
short_description: The ID of a pve-datastore-exporter's default HDD or SSD datastore
description:
  - Reads C(GET /api/datastores) from a running pve-datastore-exporter, on the controller, and returns
    the ID of its default HDD or SSD datastore.
  - Checks the default against what the caller needs (O(min_available), O(content), O(node)) and fails,
    naming the datastore and what is missing, when it does not fit. It never picks another datastore.
  - Fails as well when the exporter answers from its C(.env) fallback (unless O(allow_env_fallback)),
    when its data is older than O(max_age), and when it cannot be reached.
options:
  _terms:
    description:
      - V(hdd) or V(ssd). Several terms give one ID each, in their order.
    required: true
    type: list
    elements: str
  url:
    description:
      - Base URL of the exporter, for example V(http://127.0.0.1:9863).
    type: str
    required: true
  url_username:
    description:
      - User name for HTTP basic authentication, for an exporter (or a proxy in front of it) that asks for one.
      - Sent with the first request, not only after a C(401) challenge.
    type: str
  url_password:
    description:
      - Password for HTTP basic authentication.
    type: str
  validate_certs:
    description:
      - Verify the exporter's TLS certificate when O(url) is C(https).
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA that signed the exporter's certificate, for a private CA.
    type: path
  timeout:
    description:
      - Seconds to wait for the exporter's answer.
    type: int
    default: 10
  min_available:
    description:
      - Fail unless the default datastore has at least this much space available.
      - Bytes (V(107374182400)) or a number with a unit K, M, G, T, P or E, optionally followed by
        V(B) or V(iB) (V(100G), V(1.5T), V(512MiB)). The units are powers of 1024, as Proxmox sizes
        disks and as Ansible's C(human_to_bytes) reads them. V(G), V(GB) and V(GiB) all mean 1024^3
        bytes; there are no decimal (SI) units.
      - Compared with the cluster-wide figure (a shared datastore counted once, a local one summed over
        its nodes) unless O(node) is given.
    type: raw
  content:
    description:
      - Fail unless the default datastore holds this content type, for example V(images) for VM disks.
    type: str
  node:
    description:
      - Fail unless the default datastore is active on this node; O(min_available) is then compared
        with the space available on this node.
    type: str
  allow_env_fallback:
    description:
      - Accept an answer with C(source=env). The exporter answers so when it cannot read its database;
        its defaults are then the C(.env) initial ones, which may not be those set through the API.
      - By default such an answer fails.
    type: bool
    default: false
  max_age:
    description:
      - Fail when the exporter's last successful refresh from Proxmox is more than this many seconds
        old, or when it never had one. Unset, any age is accepted.
    type: float
  max_thin_metadata:
    description:
      - Fail when the default is an LVM-thin datastore whose thin pool metadata is fuller than this
        fraction (V(0.8) is 80 %), on O(node) or on its fullest node; or when the exporter has no such
        figure (its C(EXPORTER_POOLS_INTERVAL) is 0, or the read fails).
    type: float
    version_added: "1.2.0"
  max_overcommit:
    description:
      - Fail when the default promises its guests' disks more than this many times its size (V(1.5)),
        on O(node) or over the nodes the exporter read; or when the exporter has no such figure
        (C(EXPORTER_PROVISIONED_INTERVAL) is 0, or its token cannot see guests' volumes).
      - Datastore types that cannot promise more than they hold, and datastores whose content has neither
        V(images) nor V(rootdir), are not checked. A shared datastore's figure, read once, holds on every node.
    type: float
    version_added: "1.2.0"
  healthy_pool:
    description:
      - Fail when the default is a ZFS datastore whose zpool is not ONLINE on O(node) (or on any node
        without it), as the exporter last read it; or when the exporter has no health figure for it.
    type: bool
    default: true
    version_added: "1.2.0"
notes:
  - The lookup runs on the controller, which must reach the exporter.
  - The datastore's activity is checked always (on O(node), or on any node without it); an inactive
    default fails.
seealso:
  - module: pvedx.datastore_exporter.datastore_info
  - module: pvedx.datastore_exporter.datastore_defaults
"""

EXAMPLES = r"""
- name: The default SSD datastore, with room for a 32 GiB disk on pve1
  ansible.builtin.set_fact:
    vm_datastore: >-
      {{ lookup('pvedx.datastore_exporter.default_datastore', 'ssd',
                url='http://exporter.example.org:9863', content='images',
                node='pve1', min_available='32G') }}

- name: Both defaults at once, refreshed within the last ten minutes
  ansible.builtin.debug:
    msg: "{{ query('pvedx.datastore_exporter.default_datastore', 'hdd', 'ssd', url=exporter_url, max_age=600) }}"

- name: Through a TLS proxy with basic authentication, even while the exporter's database is unreadable
  ansible.builtin.debug:
    msg: >-
      {{ lookup('pvedx.datastore_exporter.default_datastore', 'hdd',
                url='https://exporter.example.org', ca_path='/etc/ssl/private-ca.pem',
                url_username='ansible', url_password=vault_exporter_password,
                allow_env_fallback=true) }}
"""

RETURN = r"""
_raw:
  description: The default datastore's ID, one per term.
  type: list
  elements: str
"""

import http.client
import urllib.error

from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import open_url
from ansible.plugins.lookup import LookupBase
from ansible_collections.pvedx.datastore_exporter.plugins.module_utils.exporter_api import (
    DATASTORES_PATH,
    ExporterError,
    available,
    check_datastore_id,
    check_limits,
    content_types,
    format_size,
    node_entry,
    parse_size,
    read_datastores,
    refresh_age,
    request_headers,
    risk_refusals,
)

ROLES = ("hdd", "ssd")


def check_source(answer, allow_env):
    """Refuse the .env fallback's defaults unless the caller accepts them."""
    if answer.get("source") == "env" and not allow_env:
        raise ExporterError(
            "the exporter answers from its .env fallback (source: env): it cannot read its database, so "
            "its defaults (HDD %r, SSD %r) are the configured initial ones, not necessarily those set "
            "through its API; pass allow_env_fallback=true to use them anyway"
            % (answer.get("default_hdd"), answer.get("default_ssd")))


def check_age(answer, max_age):
    """Refuse data older than max_age seconds, or data that never came from Proxmox."""
    if max_age is None:
        return
    refresh = answer.get("last_refresh") if isinstance(answer.get("last_refresh"), dict) else {}
    failing = "" if refresh.get("ok", True) else "; its last refresh failed: %s" % refresh.get("error")
    age = refresh_age(answer)
    if age is None:
        raise ExporterError("the exporter has never refreshed from Proxmox successfully, so max_age=%s s "
                            "cannot be met%s" % (max_age, failing))
    if age > max_age:
        raise ExporterError("the exporter's data is %.1f s old (last successful refresh %s), older than "
                            "max_age=%s s%s" % (age, refresh.get("last_success"), max_age, failing))


def check_default(answer, role, content=None, node=None, min_available=None, asked=None):
    """The default datastore's ID for `role`, when it fits; ExporterError naming what does not."""
    label = "default %s datastore" % role.upper()
    datastore_id = answer.get("default_" + role)
    if not datastore_id:
        raise ExporterError("the exporter has no %s set" % label)
    check_datastore_id(datastore_id, "the exporter's %s" % label)
    datastore = next((d for d in answer["datastores"] if d.get("id") == datastore_id), None)
    if datastore is None:
        said = "; ".join(answer.get("warnings") or ()) or "it is not among the exporter's enabled datastores"
        raise ExporterError("the %s %r cannot be used: %s" % (label, datastore_id, said))
    if content and content not in content_types(datastore):
        raise ExporterError("the %s %r does not hold %s (its content: %s)"
                            % (label, datastore_id, content, datastore.get("content")))
    where = datastore if node is None else node_entry(datastore, node)
    if where is None:
        on = ", ".join(entry.get("node", "?") for entry in datastore.get("nodes") or ()) or "no node"
        raise ExporterError("the %s %r is not on node %s (it is on %s)" % (label, datastore_id, node, on))
    if where.get("active") is False:
        raise ExporterError("the %s %r is not active %s" % (label, datastore_id, "on node " + node if node else "on any node"))
    if min_available is not None:
        room = available(datastore, node)
        if room is None or room < min_available:
            has = "an unknown amount of space" if room is None else format_size(room)
            raise ExporterError("the %s %r has %s available%s, less than the %s asked for by min_available=%s"
                                % (label, datastore_id, has, " on node " + node if node else "",
                                   format_size(min_available), asked))
    return datastore_id


def check_risk(answer, datastore_id, role, node, options):
    """Refuse the default `datastore_id` by the risk limits of `options` (max_thin_metadata, ...); the first reason."""
    datastore = next((d for d in answer["datastores"] if d.get("id") == datastore_id), {})
    found = risk_refusals(datastore, "default %s datastore" % role.upper(), node, **options)
    if found:
        raise ExporterError(found[0])
    return datastore_id


class LookupModule(LookupBase):
    """lookup('pvedx.datastore_exporter.default_datastore', 'ssd', url=...) -> the default SSD datastore's ID."""

    def run(self, terms, variables=None, **kwargs):
        """One checked default datastore ID per term (hdd or ssd)."""
        self.set_options(var_options=variables, direct=kwargs)
        roles = [str(term).strip().lower() for term in terms]
        unknown = [term for term, role in zip(terms, roles) if role not in ROLES]
        if unknown or not roles:
            raise AnsibleLookupError("default_datastore takes hdd or ssd, got %s" % (unknown or "nothing"))
        asked = self.get_option("min_available")
        try:
            min_available = None if asked is None else parse_size(asked)
        except ValueError as exc:
            raise AnsibleLookupError("min_available: %s" % exc) from None
        risk = {name: self.get_option(name) for name in ("max_thin_metadata", "max_overcommit", "healthy_pool")}
        try:
            check_limits(risk["max_thin_metadata"], risk["max_overcommit"])
        except ValueError as exc:
            raise AnsibleLookupError(str(exc)) from None
        try:
            answer = self._fetch()
            check_source(answer, self.get_option("allow_env_fallback"))
            check_age(answer, self.get_option("max_age"))
            return [check_risk(answer, check_default(answer, role, self.get_option("content"), self.get_option("node"),
                                                     min_available, asked), role, self.get_option("node"), risk)
                    for role in roles]
        except ExporterError as exc:
            raise AnsibleLookupError(str(exc)) from None

    def _fetch(self):
        """GET /api/datastores with open_url; the answer's JSON object, or ExporterError."""
        url = self.get_option("url").rstrip("/") + DATASTORES_PATH
        headers = request_headers(self.get_option("url_username"), self.get_option("url_password"))
        status, raw, reason = -1, b"", ""
        try:
            with open_url(url, method="GET", headers=headers, timeout=self.get_option("timeout"),
                          validate_certs=self.get_option("validate_certs"), ca_path=self.get_option("ca_path"),
                          use_netrc=False) as resp:
                status, raw = resp.getcode(), resp.read()
        except urllib.error.HTTPError as exc:  # an answer all the same: its body says why
            status, reason = exc.code, to_native(exc)
            try:
                raw = exc.read()
            except (AttributeError, OSError):
                raw = b""
        except urllib.error.URLError as exc:
            reason = to_native(exc.reason)
        except (OSError, http.client.HTTPException, UrlConnectionError, ValueError) as exc:
            reason = to_native(exc) or type(exc).__name__
        return read_datastores("GET " + url, status, raw, reason)
