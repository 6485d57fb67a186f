"""Who may write, as a table: a request's plain facts -> the refusal (status, code, sentence) or None."""

import pytest

from pve_datastore_exporter.http import policy

TOKEN = "policy-s3cret"
LOCAL = dict(method="POST", origin=None, host="localhost:9863", host_url="http://localhost:9863/",
             remote_addr="127.0.0.1", user=None, basic_auth=False, writers=frozenset(), api_token="",
             authorization="")
CROSS_SITE = (403, "forbidden", "Cross-site requests are refused; call the API directly or use its page.")
NOT_LOOPBACK = (403, "forbidden", "Changes are accepted from loopback only (Host localhost or a loopback address) "
                "while EXPORTER_API_TOKEN is not set.")
NO_TOKEN = (401, "unauthorized", "A valid 'Authorization: Bearer <token>' header is required.")
BASIC = dict(basic_auth=True, writers=frozenset({"provisioning"}))
TOKENED = dict(api_token=TOKEN, host="exporter.example:9863", host_url="http://exporter.example:9863/",
               remote_addr="192.0.2.10")


def reader(user):
    return (403, "forbidden", f"User {user!r} may read but not change anything: list it in EXPORTER_WRITE_USERS.")


@pytest.mark.parametrize("facts,expected", [
    # reads are open, whoever asks
    ({"method": "GET", "remote_addr": "192.0.2.10", "host": "evil.example"}, None),
    ({"method": "HEAD", "origin": "https://evil.example", **TOKENED}, None),
    # no token: loopback clients by a loopback name only
    ({}, None),
    ({"remote_addr": "::1", "host": "[::1]:9863"}, None),
    ({"remote_addr": "::ffff:127.0.0.1", "host": "127.0.0.1:9863"}, None),
    ({"remote_addr": "127.0.0.1", "host": "LOCALHOST."}, None),
    ({"remote_addr": "192.0.2.10"}, NOT_LOOPBACK),
    ({"remote_addr": None}, NOT_LOOPBACK),
    ({"host": "rebound.evil.example:9863"}, NOT_LOOPBACK),  # a rebound DNS name resolving to 127.0.0.1
    ({"host": "app.localhost"}, NOT_LOOPBACK),  # only a resolver decides about *.localhost
    # the browser's Origin: the page's own passes, another site never (CSRF), whatever else it has
    ({"origin": "http://localhost:9863"}, None),
    ({"origin": "https://evil.example"}, CROSS_SITE),
    ({"origin": "https://evil.example", **TOKENED, "authorization": f"Bearer {TOKEN}"}, CROSS_SITE),
    ({"origin": "https://evil.example", **BASIC, "user": "provisioning"}, CROSS_SITE),
    # the bearer token when set, from anywhere
    ({**TOKENED, "authorization": f"Bearer {TOKEN}"}, None),
    ({**TOKENED, "authorization": f"bearer  {TOKEN} "}, None),
    ({**TOKENED, "authorization": "Bearer wrong"}, NO_TOKEN),
    ({**TOKENED, "authorization": f"Basic {TOKEN}"}, NO_TOKEN),
    ({**TOKENED, "authorization": ""}, NO_TOKEN),
    ({**TOKENED, "remote_addr": "127.0.0.1", "host": "localhost"}, NO_TOKEN),  # loopback is no token
    # basic auth on: writers by name; the token is not used then
    ({**BASIC, "user": "provisioning", "remote_addr": "192.0.2.10", "host": "exporter.example"}, None),
    ({**BASIC, "user": "prometheus"}, reader("prometheus")),
    ({**BASIC, "user": "prometheus", "api_token": TOKEN, "authorization": f"Bearer {TOKEN}"}, reader("prometheus")),
    ({**BASIC, "user": None}, reader(None)),
    ({"basic_auth": True, "user": "", "writers": policy.writers("")}, reader("")),
])
def test_who_may_write(facts, expected):
    refused = policy.refusal(**{**LOCAL, **facts})
    assert (refused and (refused.status, refused.code, refused.english())) == expected


def test_writers_are_parsed_once_into_a_set():
    assert policy.writers("provisioning,ansible") == frozenset({"provisioning", "ansible"})
    assert policy.writers("") == frozenset()


@pytest.mark.parametrize("basic_auth,token,required,unused", [
    (False, "", False, False), (False, TOKEN, True, False), (True, TOKEN, False, True), (True, "", False, False)])
def test_the_token_is_asked_for_only_without_basic_auth(basic_auth, token, required, unused):
    assert policy.token_required(basic_auth, token) is required
    assert policy.token_unused(basic_auth, token) is unused
