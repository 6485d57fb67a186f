#!/usr/bin/python
# Copyright (c) 2026 the pve-datastore-exporter authors
# MIT License (see LICENSE in the collection root)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: datastore_info
short_description: Read the datastores and default datastores from a pve-datastore-exporter
version_added: "1.1.0"
description:
  - Reads C(GET /api/datastores) from a running pve-datastore-exporter and returns its datastores,
    its default HDD and SSD datastores, where it read them from and how old the data is.
  - The datastores are returned as the exporter sends them (the same keys and values); the filters
    O(content), O(node) and O(min_available) only choose which of them are returned.
  - Only reads, so it never reports a change and runs the same in check mode.
  - Uses only Ansible's own HTTP client; nothing needs to be installed on the target.
author:
  - pve-datastore-exporter team (@pvedx)
options:
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
      - Password for HTTP basic authentication. Never logged.
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
  content:
    description:
      - Return only the datastores whose content types include this one, for example V(images)
        (VM disks) or V(rootdir) (container volumes).
    type: str
  node:
    description:
      - Return only the datastores present on this cluster node.
      - With O(min_available), the space available on this node is compared, not the cluster-wide figure.
    type: str
  min_available:
    description:
      - Return only the datastores with at least this much space available.
      - Bytes (V(107374182400)) or a number with a unit K, M, G, T, P or E, optionally followed by
        V(B) or V(iB) (V(100G), V(1.5T), V(512MiB)). The units are powers of 1024, as Proxmox sizes
        disks and as Ansible's C(human_to_bytes) reads them. V(G), V(GB) and V(GiB) all mean 1024^3
        bytes; there are no decimal (SI) units.
      - The cluster-wide figure counts a shared datastore once and sums a local one over its nodes;
        give O(node) to compare the space of one node.
    type: raw
  max_thin_metadata:
    description:
      - Leave out LVM-thin datastores whose thin pool metadata is fuller than this fraction (V(0.8) is
        80 %), on O(node) or on their fullest node, or whose figure the exporter does not have.
      - Each datastore left out is named in RV(refused), with the figure and the limit.
    type: float
    version_added: "1.2.0"
  max_overcommit:
    description:
      - Leave out datastores that promise their guests' disks more than this many times their size
        (V(1.5)), or whose provisioned figure the exporter does not have; types that cannot promise
        more than they hold, and datastores without V(images) or V(rootdir), are not checked.
    type: float
    version_added: "1.2.0"
  healthy_pool:
    description:
      - Leave out ZFS datastores whose zpool is not ONLINE on O(node) (or on any node without it), or
        whose health the exporter has not read.
    type: bool
    default: true
    version_added: "1.2.0"
notes:
  - A datastore's C(content) is the exporter's comma-separated string, as Proxmox writes it
    (V(images,rootdir)); O(content) compares whole content types, not substrings.
  - The exporter lists only enabled datastores.
seealso:
  - module: pvedx.datastore_exporter.datastore_defaults
  - plugin: pvedx.datastore_exporter.default_datastore
    plugin_type: lookup
attributes:
  check_mode:
    support: full
    description: Reads the same answer as without check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to compare.
  platform:
    support: full
    platforms: posix
    description: Runs on any target that reaches the exporter over HTTP.
"""

EXAMPLES = r"""
- name: Read every datastore of the cluster
  pvedx.datastore_exporter.datastore_info:
    url: http://127.0.0.1:9863
  register: pvedx_datastores

- name: Show the default SSD datastore and how old the data is
  ansible.builtin.debug:
    msg: "{{ pvedx_datastores.default_ssd }}, refreshed {{ pvedx_datastores.last_refresh }} s ago"

- name: Datastores for VM disks on pve2 with at least 500 GiB free, from the controller
  pvedx.datastore_exporter.datastore_info:
    url: https://exporter.example.org:9863
    ca_path: /etc/ssl/private-ca.pem
    url_username: ansible
    url_password: "{{ vault_exporter_password }}"
    content: images
    node: pve2
    min_available: 500G
  delegate_to: localhost
  register: pvedx_roomy

- name: The IDs of those datastores
  ansible.builtin.debug:
    msg: "{{ pvedx_roomy.datastores | map(attribute='id') | list }}"
"""

RETURN = r"""
datastores:
  description:
    - The enabled datastores that match the filters, in the exporter's order, exactly as its
      C(GET /api/datastores) answer has them. Sizes are bytes.
  returned: success
  type: list
  elements: dict
  contains:
    id:
      description: The datastore ID.
      type: str
      sample: local-lvm
    name:
      description: The datastore's name (its ID).
      type: str
      sample: local-lvm
    type:
      description: The Proxmox storage type.
      type: str
      sample: lvmthin
    content:
      description: The content types, comma-separated, as Proxmox lists them.
      type: str
      sample: images,rootdir
    shared:
      description: Whether every node sees the same storage (counted once in the sizes).
      type: bool
      sample: false
    size:
      description: Bytes in all (a local datastore summed over its nodes).
      type: int
      sample: 1836359925760
    used:
      description: Bytes used.
      type: int
      sample: 520857376358
    available:
      description: Bytes available.
      type: int
      sample: 1315502549402
    enabled:
      description: Whether the datastore is enabled.
      type: bool
      sample: true
    active:
      description: Whether Proxmox reports it available on at least one node.
      type: bool
      sample: true
    is_default_hdd:
      description: Whether it is the default HDD datastore.
      type: bool
      sample: true
    is_default_ssd:
      description: Whether it is the default SSD datastore.
      type: bool
      sample: false
    is_system_default:
      description: Whether it is one of the Proxmox installer's datastores.
      type: bool
      sample: true
    nodes:
      description: The figures per node (C(node), C(size), C(used), C(available), C(active)).
      type: list
      elements: dict
      sample: [{"node": "pve1", "size": 1836359925760, "used": 520857376358, "available": 1315502549402, "active": true}]
    updated_at:
      description: When the exporter last stored the datastore (UTC, ISO 8601).
      type: str
      sample: "2026-11-26T03:36:37Z"
refused:
  description:
    - The datastores the risk options (O(max_thin_metadata), O(max_overcommit), O(healthy_pool)) left out,
      each with the sentences saying why (the datastore, the figure and the limit).
  returned: success
  type: list
  elements: dict
  sample: [{"id": "local-lvm", "reasons": ["the datastore 'local-lvm' has its thin pool metadata 93.0 % full on node pve1,
           over max_thin_metadata=0.8"]}]
  version_added: "1.2.0"
default_hdd:
  description: The default HDD datastore's ID (null when none is set).
  returned: success
  type: str
  sample: local-lvm
default_ssd:
  description: The default SSD datastore's ID (null when none is set).
  returned: success
  type: str
  sample: local
source:
  description:
    - Where the exporter read the defaults from, V(db) or V(env).
    - V(env) means its database cannot be read and the defaults are the C(.env) initial ones.
  returned: success
  type: str
  sample: db
cluster:
  description: The cluster's name, passed on when the exporter's answer has it.
  returned: when the exporter sends it
  type: str
  sample: pve-prod
role:
  description:
    - V(leader) on the replica that reads Proxmox, V(follower) on the others (replicas sharing a PostgreSQL
      database), passed on when the exporter's answer has it.
  returned: when the exporter sends it
  type: str
  sample: leader
  version_added: "1.2.0"
last_refresh:
  description:
    - Seconds since the exporter last read Proxmox successfully (its C(last_refresh.age_seconds)),
      null when it never did.
  returned: success
  type: float
  sample: 4.2
refresh:
  description: The exporter's whole C(last_refresh) object (C(ok), C(last_attempt), C(last_success), C(error), C(reason), ...).
  returned: success
  type: dict
  sample: {"ok": true, "last_attempt": "2026-11-26T03:36:37Z", "last_success": "2026-11-26T03:36:37Z",
           "age_seconds": 4.2, "error": null, "reason": null}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import fetch_url
from ansible_collections.pvedx.datastore_exporter.plugins.module_utils.exporter_api import (
    DATASTORES_PATH,
    ExporterError,
    check_datastore_ids,
    check_limits,
    parse_size,
    read_datastores,
    refresh_age,
    request_headers,
    risk_refusals,
    select,
)


def fetch_datastores(module):
    """GET /api/datastores with fetch_url; the answer's JSON object, or ExporterError."""
    params = module.params
    url = params["url"].rstrip("/") + DATASTORES_PATH
    resp, info = fetch_url(module, url, method="GET", timeout=params["timeout"], ca_path=params["ca_path"],
                           headers=request_headers(params["url_username"], params["url_password"]))
    # On an HTTP error fetch_url hands back the error, already read, with its body in info.
    raw = info["body"] if "body" in info else (resp.read() if resp is not None else b"")
    return check_datastore_ids(read_datastores("GET " + url, info["status"], raw, info.get("msg", "")), "GET " + url)


def summary(answer, datastores):
    """The module's result from the exporter's answer and the datastores chosen from it."""
    result = dict(changed=False, datastores=datastores, default_hdd=answer.get("default_hdd"),
                  default_ssd=answer.get("default_ssd"), source=answer.get("source"),
                  last_refresh=refresh_age(answer), refresh=answer.get("last_refresh"))
    for key in ("cluster", "role"):  # later exporters name their cluster and their replica's role; older ones do not
        if key in answer:
            result[key] = answer[key]
    return result


def without_risky(datastores, node, options):
    """The datastores the risk options keep, and those they leave out with their reasons."""
    kept, refused = [], []
    for datastore in datastores:
        reasons = risk_refusals(datastore, "datastore", node, **options)
        if reasons:
            refused.append({"id": datastore.get("id"), "reasons": reasons})
        else:
            kept.append(datastore)
    return kept, refused


def main():
    """Read the exporter's datastores, keep those that match the filters, report; never a change."""
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            url_username=dict(type="str"),
            url_password=dict(type="str", no_log=True),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            timeout=dict(type="int", default=10),
            content=dict(type="str"),
            node=dict(type="str"),
            min_available=dict(type="raw"),
            max_thin_metadata=dict(type="float"),
            max_overcommit=dict(type="float"),
            healthy_pool=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    min_available = module.params["min_available"]
    if min_available is not None:
        try:
            min_available = parse_size(min_available)
        except ValueError as exc:
            module.fail_json(msg="min_available: %s" % exc)
    risk = {name: module.params[name] for name in ("max_thin_metadata", "max_overcommit", "healthy_pool")}
    try:
        check_limits(risk["max_thin_metadata"], risk["max_overcommit"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    try:
        answer = fetch_datastores(module)
    except ExporterError as exc:
        module.fail_json(msg=str(exc), status=exc.status, error=exc.error)
    for warning in answer.get("warnings") or ():
        module.warn("the exporter says: %s" % warning)
    chosen = select(answer["datastores"], module.params["content"], min_available, module.params["node"])
    chosen, refused = without_risky(chosen, module.params["node"], risk)
    module.exit_json(refused=refused, **summary(answer, chosen))


if __name__ == "__main__":
    main()
