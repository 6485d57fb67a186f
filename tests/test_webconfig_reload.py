"""The web config re-read whole while serving (issue 22, items 8 and 10; issue 23, item 3), over real TLS.

Before: only the certificate files were watched, loaded into the live context: a client CA
removed from the file stayed trusted (load_verify_locations adds to the store), a renewal
copied without its key took every handshake down, and users or headers never changed.
"""

import logging
import os
import shutil
import ssl

import bcrypt
import pytest
import requests

from pve_datastore_exporter.http import webconfig
from pve_datastore_exporter.http.front import Front
from pve_datastore_exporter.http.listener import HttpServer, listening_socket
from pve_datastore_exporter.http.tls import WebConfigWatcher, usable
from pve_datastore_exporter.metrics import Exposition
from tools.certs import PrivateCA

USERS = {"alice": "old-pw", "bob": "bob-pw"}


async def ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def write_config(folder, users: dict[str, str], extra: str = "", header: str = "max-age=1") -> None:
    hashes = "".join(f"  {user}: {bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()}\n" for user, pw in users.items())
    text = ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\n" + extra +
            f"http_server_config:\n  headers:\n    Strict-Transport-Security: {header}\nbasic_auth_users:\n{hashes}")
    (folder / "web.yml.new").write_text(text)
    os.replace(folder / "web.yml.new", folder / "web.yml")  # as an editor or Ansible does


@pytest.fixture
def served(tmp_path):
    server_ca, client_a, client_b = PrivateCA(), PrivateCA(), PrivateCA()
    server_ca.issue(tmp_path / "server.crt", tmp_path / "server.key")
    server_ca.write_ca(tmp_path / "server-ca.crt")
    for name, ca in (("a", client_a), ("b", client_b)):
        ca.issue(tmp_path / f"client-{name}.crt", tmp_path / f"client-{name}.key")
        ca.write_ca(tmp_path / f"ca-{name}.crt")
    shutil.copy(tmp_path / "ca-a.crt", tmp_path / "clients.crt")
    write_config(tmp_path, USERS)
    web = webconfig.load(str(tmp_path / "web.yml"))
    exposition = Exposition(process=False)
    front = Front(ok, exposition, web)
    server = HttpServer(front, listening_socket("127.0.0.1", 0), usable(web))
    thread = server.start_in_thread()
    watcher = WebConfigWatcher(web, every=3600)  # checked by hand below
    watcher.start(server)
    yield tmp_path, server, watcher, exposition, server_ca
    watcher.stop()
    server.stop()
    thread.join(10)
    server.sock.close()


def get(folder, server, client: str = "a", auth=("alice", "old-pw")) -> requests.Response:
    cert = (str(folder / f"client-{client}.crt"), str(folder / f"client-{client}.key"))
    return requests.get(f"https://localhost:{server.port}/", cert=cert, auth=auth, verify=str(folder / "server-ca.crt"),
                        timeout=5)


def reload_ok(exposition) -> float:
    return exposition.registry.get_sample_value("pve_datastore_web_config_last_reload_successful")


def served_organisation(folder, server) -> str:
    context = ssl.create_default_context(cafile=str(folder / "server-ca.crt"))
    context.load_cert_chain(folder / "client-a.crt", folder / "client-a.key")
    import socket
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        return dict(pair[0] for pair in tls.getpeercert()["subject"])["organizationName"]


def test_a_client_ca_removed_from_the_file_is_no_longer_trusted(served):
    folder, server, watcher, exposition, _ = served
    assert get(folder, server, "a").status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        get(folder, server, "b")
    shutil.copy(folder / "ca-b.crt", folder / "clients.crt.new")
    os.replace(folder / "clients.crt.new", folder / "clients.crt")  # CA A out, CA B in
    assert watcher.check() and reload_ok(exposition) == 1
    assert get(folder, server, "b").status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        get(folder, server, "a")  # before: still 200 (A stayed in the live context's store)


def test_a_renewal_without_its_key_keeps_the_old_pair_until_the_key_arrives(served, caplog):
    folder, server, watcher, exposition, server_ca = served
    server_ca.issue(folder / "next.crt", folder / "next.key", "renewed")
    os.replace(folder / "next.crt", folder / "server.crt")  # the certificate first, its key not yet
    with caplog.at_level(logging.WARNING):
        assert not watcher.check() and not watcher.check()
    assert reload_ok(exposition) == 0
    assert [r.getMessage() for r in caplog.records if "kept" in r.getMessage()].__len__() == 1  # said once
    assert get(folder, server).status_code == 200  # before: every handshake failed
    assert served_organisation(folder, server) == "pvedx tests"  # the old pair, whole
    os.replace(folder / "next.key", folder / "server.key")
    assert watcher.check() and reload_ok(exposition) == 1
    assert served_organisation(folder, server) == "renewed"


def test_users_and_headers_change_at_once_and_the_old_password_is_refused(served):
    folder, server, watcher, _, _ = served
    assert get(folder, server).status_code == 200
    assert get(folder, server, auth=("bob", "bob-pw")).headers["Strict-Transport-Security"] == "max-age=1"
    write_config(folder, {"alice": "new-pw"}, header="max-age=2")  # alice's password rotated, bob removed
    assert watcher.check()
    assert get(folder, server).status_code == 401  # the old password, remembered before, is refused at once
    assert get(folder, server, auth=("bob", "bob-pw")).status_code == 401
    answer = get(folder, server, auth=("alice", "new-pw"))
    assert answer.status_code == 200 and answer.headers["Strict-Transport-Security"] == "max-age=2"


@pytest.mark.parametrize("change", ["broken YAML", "TLS turned off", "a control byte in a header"])
def test_a_change_that_cannot_be_used_keeps_the_config_in_force(served, change):
    folder, server, watcher, exposition, _ = served
    if change == "broken YAML":
        (folder / "web.yml").write_text("tls_server_config: [unclosed\n")
    elif change == "TLS turned off":
        (folder / "web.yml").write_text("basic_auth_users: {}\n")
    else:
        write_config(folder, {"alice": "new-pw"}, header='"max-age=1\\x01"')
    assert not watcher.check() and reload_ok(exposition) == 0
    assert get(folder, server).status_code == 200  # alice's old password, the old TLS: all still in force
    write_config(folder, {"alice": "new-pw"})
    assert watcher.check() and reload_ok(exposition) == 1 and get(folder, server).status_code == 401
