"""`healthcheck` (the image's HEALTHCHECK): GET /healthz of the exporter serving with the same settings."""

from __future__ import annotations

from pve_datastore_exporter import cli
from pve_datastore_exporter.http import probe
from tools.certs import PrivateCA
from tools.processes import free_port

from .factories import FakeReader, config
from .servers import Exporter


def test_a_serving_exporter_is_healthy_on_the_loopback_of_its_wildcard_address(tmp_path):
    e = Exporter(config(tmp_path), FakeReader())
    try:
        served = config(tmp_path, listen_address=f"0.0.0.0:{e.server.port}")
        assert probe.target(served) == ("127.0.0.1", e.server.port, False)
        alive, seen = probe.check(served)
        assert alive and seen == f"http://127.0.0.1:{e.server.port}/healthz: HTTP 200"
    finally:
        e.close()


def test_nothing_listening_is_unhealthy_and_the_command_exits_1(tmp_path, capsys):
    port = free_port()
    alive, seen = probe.check(config(tmp_path, listen_address=f"127.0.0.1:{port}"), timeout=2)
    assert not alive and seen.startswith(f"http://127.0.0.1:{port}/healthz: ")
    assert cli.cmd_healthcheck(config(tmp_path, listen_address=f"127.0.0.1:{port}"), None) == 1
    assert capsys.readouterr().err.startswith("unhealthy: ")


def test_the_web_config_decides_https(tmp_path):
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  u: $2b$04$DPsZ3qGQh7dW5mD8iW9e6e1p8lHqs3xO7yKJkKxT8Tqf3v1UuN8xS\n")
    assert probe.target(config(tmp_path, listen_address="[::]:9000", web_config_file=str(web))) == ("::1", 9000, False)
    PrivateCA().issue(tmp_path / "server.crt", tmp_path / "server.key")
    web.write_text("tls_server_config: {cert_file: server.crt, key_file: server.key}\n")
    assert probe.target(config(tmp_path, listen_address="10.0.0.5:9863", web_config_file=str(web))) == \
        ("10.0.0.5", 9863, True)
