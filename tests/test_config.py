"""Configuration: one table, .env then environment, one clear line per wrong value."""

import dataclasses
import re
from pathlib import Path

import pytest

from pve_datastore_exporter import config as cfg
from tools import settings_docs

ROOT = Path(__file__).parent.parent


def test_defaults_match_the_design_table():
    c = cfg.load(env_file=None, environ={})
    assert (c.proxmox_port, c.proxmox_verify_ssl, c.proxmox_timeout) == (8006, True, 10)
    assert (c.hdd_datastore, c.ssd_datastore) == ("local-lvm", "local")
    assert c.database_url == "sqlite:///instance/proxmox_manager.db"
    assert (c.listen_address, c.refresh_interval, c.log_level) == ("0.0.0.0:9863", 60, "INFO")


def test_environment_wins_over_env_file(tmp_path):
    env = tmp_path / ".env"
    env.write_text("PROXMOX_HOST=from-file\nPROXMOX_HDD_DATASTORE=file-hdd\nEXPORTER_REFRESH_INTERVAL=30\n")
    c = cfg.load(env_file=str(env), environ={"PROXMOX_HOST": "from-env"})
    assert (c.proxmox_host, c.hdd_datastore, c.refresh_interval) == ("from-env", "file-hdd", 30)


def test_blank_value_means_default(tmp_path):
    env = tmp_path / ".env"
    env.write_text("PROXMOX_HDD_DATASTORE=\n")
    assert cfg.load(env_file=str(env), environ={}).hdd_datastore == "local-lvm"


@pytest.mark.parametrize("name,value,expected", [
    ("PROXMOX_PORT", "http", "PROXMOX_PORT: invalid value 'http'; expected a whole number from 1 to 65535"),
    ("PROXMOX_VERIFY_SSL", "maybe", "PROXMOX_VERIFY_SSL: invalid value 'maybe'; expected true or false"),
    ("EXPORTER_REFRESH_INTERVAL", "-5", "EXPORTER_REFRESH_INTERVAL: invalid value '-5'"),
    ("EXPORTER_LISTEN_ADDRESS", "9863", "EXPORTER_LISTEN_ADDRESS: invalid value '9863'; expected host:port"),
    ("PROXMOX_HDD_DATASTORE", "bad id!", "PROXMOX_HDD_DATASTORE: invalid value 'bad id!'"),
    ("DATABASE_URL", "proxmox.db", "DATABASE_URL: invalid value 'proxmox.db'"),
    ("EXPORTER_LOG_LEVEL", "loud", "EXPORTER_LOG_LEVEL: invalid value 'loud'; expected one of DEBUG"),
    ("PROXMOX_HOST", "https://pve1:8006", "PROXMOX_HOST: invalid value 'https://pve1:8006'"),
])
def test_wrong_value_names_the_variable_and_what_is_accepted(name, value, expected):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(env_file=None, environ={name: value})
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_listen_address_accepts_ipv6():
    assert cfg.parse_listen_address("[::1]:9863") == ("::1", 9863)


def test_check_proxmox_explains_what_is_missing():
    base = cfg.load(env_file=None, environ={})
    with pytest.raises(cfg.ConfigError, match="PROXMOX_HOST"):
        base.check_proxmox()
    with pytest.raises(cfg.ConfigError, match="realm"):
        base.replace(proxmox_host="pve1", proxmox_user="monitor").check_proxmox()
    with pytest.raises(cfg.ConfigError, match="not user!name"):
        base.replace(proxmox_host="pve1", proxmox_user="m@pve", proxmox_token_name="m@pve!x",
                     proxmox_token_value="v").check_proxmox()
    base.replace(proxmox_host="pve1", proxmox_user="m@pve", proxmox_password="pw").check_proxmox()


def test_secrets_are_masked_in_describe_and_repr():
    c = cfg.load(env_file=None, environ={"PROXMOX_TOKEN_VALUE": "s3cret-token", "EXPORTER_API_TOKEN": "api-s3cret"})
    text = repr(c) + repr(cfg.describe(c))
    assert "s3cret" not in text
    assert dict((n, v) for n, v, _ in cfg.describe(c))["PROXMOX_TOKEN_VALUE"] == "***"


def test_secret_value_never_appears_in_an_error():
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(env_file=None, environ={"PROXMOX_PORT": "x", "PROXMOX_PASSWORD": "pw-s3cret"})
    assert "pw-s3cret" not in str(info.value)


def test_config_is_made_from_the_settings_table():
    """One field per setting, same order and names; Config() holds the parsed defaults."""
    assert [f.name for f in dataclasses.fields(cfg.Config)] == [s.field for s in cfg.SETTINGS]
    assert len({s.env for s in cfg.SETTINGS}) == len(cfg.SETTINGS), "a variable is declared twice"
    assert cfg.Config() == cfg.load(env_file=None, environ={})
    assert (cfg.Config().proxmox_port, cfg.Config(proxmox_port=1).proxmox_port) == (8006, 1)
    assert [f.name for f in dataclasses.fields(cfg.Config) if not f.repr] == [s.field for s in cfg.SETTINGS if s.secret]
    for s in cfg.SETTINGS:  # one line each: a comment line in .env.example, a cell in the README
        assert s.help and "\n" not in s.help and s.env.isupper(), s.env


def _env_keys(text):
    return [line.split("=", 1)[0].lstrip("# ").strip() for line in text.splitlines()
            if "=" in line and line.lstrip("# ").split("=", 1)[0].strip().isupper()]


def test_env_example_lists_exactly_the_settings():
    keys = _env_keys((ROOT / ".env.example").read_text())
    assert keys == [s.env for s in cfg.SETTINGS]


def test_env_example_is_generated_from_the_settings():
    assert (ROOT / ".env.example").read_text() == settings_docs.env_example(), "run make docs"


def test_env_example_read_as_an_env_file_gives_the_defaults(tmp_path):
    env = tmp_path / ".env"
    env.write_text(settings_docs.env_example())
    assert cfg.load(env_file=str(env), environ={}) == cfg.Config()


def test_readme_configuration_table_is_generated_from_the_settings():
    readme = (ROOT / "README.md").read_text()
    assert readme == settings_docs.with_readme_table(readme), "run make docs"


def test_readme_configuration_table_lists_every_setting_with_its_default():
    readme = (ROOT / "README.md").read_text()
    for s in cfg.SETTINGS:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{s.env}`")), None)
        assert row is not None, f"README has no configuration row for {s.env}"
        if s.default:
            assert s.default in row, f"README row for {s.env} does not show the default {s.default}"


def test_readme_names_every_secret():
    secrets_line = re.search(r"^Secrets \((.*?)\) never appear", (ROOT / "README.md").read_text(), re.M | re.S)
    assert secrets_line, "README lost its paragraph on secrets"
    for s in cfg.SETTINGS:
        if s.secret:
            assert f"`{s.env}`" in secrets_line.group(1), s.env


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "foo://x", "instance/db.sqlite"])
def test_database_url_must_be_sqlite_or_postgresql(url):
    with pytest.raises(cfg.ConfigError, match="DATABASE_URL: invalid value .*expected sqlite:///"):
        cfg.load(env_file=None, environ={"DATABASE_URL": url})


@pytest.mark.parametrize("value", ["loc\u017fal", "\u212aeep", "a", "-lvm", "lvm-"])
def test_datastore_ids_follow_proxmox_exactly(value):
    with pytest.raises(cfg.ConfigError, match="PROXMOX_HDD_DATASTORE"):
        cfg.load(env_file=None, environ={"PROXMOX_HDD_DATASTORE": value})


def test_an_empty_environment_variable_does_not_hide_the_env_file(tmp_path):
    env = tmp_path / ".env"
    env.write_text("PROXMOX_HOST=from-file\n")
    assert cfg.load(env_file=str(env), environ={"PROXMOX_HOST": ""}).proxmox_host == "from-file"


def test_database_password_counts_as_a_secret():
    c = cfg.Config(database_url="postgresql://u:db-s3cret@h/x", proxmox_password="pw")
    assert set(c.secrets()) == {"db-s3cret", "pw"}
    assert cfg.mask_url(c.database_url) == "postgresql://u:***@h/x"


@pytest.mark.parametrize("url", ["postgresql://u:pw-s3cret@127.0.0.1:99999/x", "postgresql://u:pw-s3cret@h:abc/x",
                                 "postgresql://u:pw-s3cret@[::1/x", "sqlite:///x.db?foo=bar",
                                 "postgresql+psycopg2://u:pw-s3cret@h/x",
                                 # No database's name: it stopped `serve` with a traceback that showed the password.
                                 "postgresql://u:pw-s3cret@127.0.0.1:5432", "postgres://u:pw-s3cret@h/"])
def test_a_database_url_that_cannot_work_is_one_line_without_its_password(url):
    with pytest.raises(cfg.ConfigError, match="^DATABASE_URL: invalid value") as info:
        cfg.load(env_file=None, environ={"DATABASE_URL": url})
    assert "pw-s3cret" not in str(info.value)


def test_an_env_file_that_is_not_utf8_is_one_line(tmp_path):
    env = tmp_path / ".env"
    env.write_bytes(b"PROXMOX_HOST=\xff\xfe\n")
    with pytest.raises(cfg.ConfigError, match="is not UTF-8 text"):
        cfg.load(env_file=str(env), environ={})


def test_scrub_masks_whole_secrets_and_cut_off_echoes():
    secret = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    text = f"401 invalid token PVEAPIToken=monitor@pve!exporter={secret[:27]} and again {secret}"
    assert cfg.scrub(text, (secret,)) == "401 invalid token PVEAPIToken=monitor@pve!exporter=*** and again ***"
    assert cfg.scrub("aaaa only", (secret,)) == "aaaa only"  # under 8 characters: not a recognisable piece


def test_scrub_masks_any_piece_of_a_secret_of_the_minimum_length_and_leaves_short_secrets_alone():
    secret = "a1b2c3d4-5678-90ab-cdef-t-token-uuid"
    echoed = f"400 bad value '{secret[-12:]}' near '{secret[9:19].upper()}' / {secret[-7:]}"
    assert cfg.scrub(echoed, (secret,)) == f"400 bad value '***' near '***' / {secret[-7:]}"  # 7 < SCRUB_MIN
    assert cfg.SCRUB_MIN == 8
    text = "Proxmox VE answered 401 for monitor@pve"
    assert cfg.scrub(text, ("o", "x-pass", "")) == text  # shorter than SCRUB_WHOLE: never "Pr***xm***x"
    # A secret of SCRUB_WHOLE to SCRUB_MIN - 1 characters is masked whole, in any case (a 6-character password).
    assert cfg.scrub("login as monitor with Hunt3r failed; hunt3r", ("hunt3r",)) == "login as monitor with *** failed; ***"
    assert cfg.scrub("Proxmox answered", ("abc",)) == "Proxmox answered"


# Issue 14, finding 4: the review's three URLs printed the password's tail, a query password, or
# the whole URL. The userinfo runs to the last "@", and libpq takes password= as a parameter.
LEAKY_URLS = {
    "postgresql://exporter:Db@Secret99@host/pve": ("Db@Secret99", "postgresql://exporter:***@host/pve"),
    "postgresql://exporter@host/pve?password=QueryS3cretPw": (
        "QueryS3cretPw", "postgresql://exporter@host/pve?password=***"),
    "postgresql://exporter:Sl/ashPw9@host/pve": ("Sl/ashPw9", "postgresql://exporter:***@host/pve"),
    "postgresql://exporter:p%40ss%2Fw0rd@host/pve?sslmode=require&PASSWORD=Other-Pw1": (
        "p@ss/w0rd", "postgresql://exporter:***@host/pve?sslmode=require&PASSWORD=***"),
}


@pytest.mark.parametrize("url", LEAKY_URLS)
def test_every_password_in_a_database_url_is_masked_and_a_secret(url):
    password, masked = LEAKY_URLS[url]
    assert cfg.mask_url(url) == masked
    secrets = cfg.Config(database_url=url).secrets() if "Sl/" not in url else tuple(cfg.database_passwords(url))
    assert password in secrets
    assert password not in cfg.scrub(f"could not connect to {url}: refused", secrets)


def test_a_url_with_no_scheme_is_masked_whole():
    assert cfg.mask_url("exporter:Pw-s3cret@host/pve") == "***"


def test_an_unparsable_database_url_stops_start_up_without_its_password():
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(env_file=None, environ={"DATABASE_URL": "postgresql://exporter:Sl/ashPw9@host/pve"})
    assert "ashPw9" not in str(info.value) and "Sl/" not in str(info.value)
    assert "postgresql://exporter:***@host/pve" in str(info.value)


def test_scrub_masks_a_secret_echoed_in_another_letter_case():
    secret = "Tok-S3cret-Abcdef-0123"
    text = f"401: header was authorization: pveapitoken=m@pve!x={secret.lower()} / {secret.upper()[:12]}"
    assert cfg.scrub(text, (secret,)) == "401: header was authorization: pveapitoken=m@pve!x=*** / ***"


# -- *_FILE: a secret read from a file (containers' secrets) ------------------------------------------

def test_every_secret_and_the_database_url_may_come_from_a_file(tmp_path):
    """Each of FILE_SETTINGS read from NAME_FILE, one trailing newline stripped (what `echo x > f` writes)."""
    assert set(cfg.FILE_SETTINGS) == {"PROXMOX_TOKEN_VALUE", "PROXMOX_PASSWORD", "EXPORTER_API_TOKEN", "DATABASE_URL"}
    values = {"PROXMOX_TOKEN_VALUE": "tok en\n", "PROXMOX_PASSWORD": "pw\r\n", "EXPORTER_API_TOKEN": "api",
              "DATABASE_URL": "sqlite:////data/x.db\n"}
    environ = {}
    for env, value in values.items():
        (tmp_path / env).write_text(value, newline="")
        environ[f"{env}_FILE"] = str(tmp_path / env)
    c = cfg.load(env_file=None, environ=environ)
    assert (c.proxmox_token_value, c.proxmox_password, c.api_token, c.database_url) == \
        ("tok en", "pw", "api", "sqlite:////data/x.db")


def test_a_file_variable_in_the_env_file_works_like_one_in_the_environment(tmp_path):
    (tmp_path / "secret").write_text("from-file\n")
    (tmp_path / ".env").write_text(f"PROXMOX_PASSWORD_FILE={tmp_path / 'secret'}\n")
    assert cfg.load(env_file=str(tmp_path / ".env"), environ={}).proxmox_password == "from-file"


@pytest.mark.parametrize("env", ["PROXMOX_TOKEN_VALUE", "DATABASE_URL"])
def test_a_setting_and_its_file_both_set_is_an_error_naming_both(tmp_path, env):
    (tmp_path / "f").write_text("sqlite:///in-file.db")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(env_file=None, environ={env: "sqlite:///direct-s3cret.db", f"{env}_FILE": str(tmp_path / "f")})
    assert str(info.value) == f"{env} and {env}_FILE are both set in the environment; set one of them"
    assert "s3cret" not in str(info.value) and "in-file" not in str(info.value)


def test_the_environment_wins_over_the_env_file_whichever_form_each_uses(tmp_path):
    """NAME in one source and NAME_FILE in the other is no conflict: the environment wins, as for every setting.

    An image or role that sets PROXMOX_TOKEN_VALUE_FILE beside an old .env holding PROXMOX_TOKEN_VALUE starts.
    """
    (tmp_path / "token").write_text("tok-from-file\n")
    (tmp_path / ".env").write_text("PROXMOX_TOKEN_VALUE=old-tok-in-dotenv\n"
                                   f"PROXMOX_PASSWORD_FILE={tmp_path / 'not-there'}\n")
    c = cfg.load(env_file=str(tmp_path / ".env"),
                 environ={"PROXMOX_TOKEN_VALUE_FILE": str(tmp_path / "token"), "PROXMOX_PASSWORD": "pw-from-env"})
    # The .env's PROXMOX_PASSWORD_FILE names a missing file: it is not read at all, the environment's value stands.
    assert (c.proxmox_token_value, c.proxmox_password) == ("tok-from-file", "pw-from-env")
    # Either form of the .env still counts when the environment sets neither.
    (tmp_path / "pw").write_text("pw-from-dotenv-file")
    (tmp_path / ".env").write_text(f"PROXMOX_TOKEN_VALUE=tok-in-dotenv\nPROXMOX_PASSWORD_FILE={tmp_path / 'pw'}\n")
    c = cfg.load(env_file=str(tmp_path / ".env"), environ={"PROXMOX_TOKEN_VALUE_FILE": "", "PROXMOX_PASSWORD": " "})
    assert (c.proxmox_token_value, c.proxmox_password) == ("tok-in-dotenv", "pw-from-dotenv-file")


def test_a_setting_and_its_file_both_set_in_the_env_file_is_an_error_naming_both_and_the_file(tmp_path):
    (tmp_path / "f").write_text("in-file-s3cret")
    (tmp_path / ".env").write_text(f"EXPORTER_API_TOKEN=direct-s3cret\nEXPORTER_API_TOKEN_FILE={tmp_path / 'f'}\n")
    with pytest.raises(cfg.ConfigError) as info:  # the environment setting neither does not hide the conflict
        cfg.load(env_file=str(tmp_path / ".env"), environ={})
    assert str(info.value) == (f"EXPORTER_API_TOKEN and EXPORTER_API_TOKEN_FILE are both set in {tmp_path / '.env'}; "
                               "set one of them")
    # Each source is checked on its own: a .env at odds with itself is refused even while the environment's value
    # would win, or it would start failing the day that value is taken away.
    with pytest.raises(cfg.ConfigError, match="are both set in "):
        cfg.load(env_file=str(tmp_path / ".env"), environ={"EXPORTER_API_TOKEN": "from-env"})


def test_an_unreadable_file_is_an_error_naming_the_file_never_its_content(tmp_path):
    missing = tmp_path / "nothing-here"
    with pytest.raises(cfg.ConfigError, match=f"PROXMOX_PASSWORD_FILE: cannot read {missing} "):
        cfg.load(env_file=None, environ={"PROXMOX_PASSWORD_FILE": str(missing)})
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xffs3cret-bytes")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(env_file=None, environ={"EXPORTER_API_TOKEN_FILE": str(binary)})
    assert str(info.value) == f"EXPORTER_API_TOKEN_FILE: {binary} is not UTF-8 text"
    with pytest.raises(cfg.ConfigError) as info:  # a directory: read() fails, the path is named
        cfg.load(env_file=None, environ={"PROXMOX_TOKEN_VALUE_FILE": str(tmp_path)})
    assert str(info.value).startswith(f"PROXMOX_TOKEN_VALUE_FILE: cannot read {tmp_path} (")


def test_a_bad_value_read_from_a_file_is_reported_masked(tmp_path):
    (tmp_path / "url").write_text("mysql://user:db-s3cret@host/db\n")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(env_file=None, environ={"DATABASE_URL_FILE": str(tmp_path / "url")})
    assert str(info.value).startswith("DATABASE_URL: invalid value") and "db-s3cret" not in str(info.value)


def test_readme_names_every_file_variant():
    readme = (ROOT / "README.md").read_text()
    for env in cfg.FILE_SETTINGS:
        assert f"`{env}_FILE`" in readme, env
