"""Connection profiles: validation, the TOML file, and connecting with a password from the env."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_morgue.core.entry import build_entry
from celery_morgue.tui.config_file import (
    CONFIG_ENV,
    Config,
    ConfigError,
    ConfigSyntaxError,
    NoProfileError,
    UnknownProfileError,
    config_path,
    load_config,
    save_config,
    update_config,
)
from celery_morgue.tui.connection import connect_profile
from celery_morgue.tui.demo.processes import RedisServer
from celery_morgue.tui.profiles import (
    Profile,
    ProfileError,
    validate_field,
    validate_keymap,
    validate_profile_fields,
)
from celery_morgue.tui.screens.profile_draft import TEXT_FIELDS, FormValues, check_form
from tests.helpers import Morgue, one_error_line

EXAMPLE = """\
default = "prod"

[profiles.prod]
url = "rediss://redis.example.com:6380/0?ssl_cert_reqs=required"
broker_url = "amqp://morgue@rabbit.example.com:5672//"
broker_password_env = "RABBIT_PASSWORD"
password_env = "MORGUE_REDIS_PASSWORD"
prefix = "dlq:"
refresh = 5
inspect_timeout = 2.5
hard_limit = 600
grace = 0
readonly = true

[profiles.local]
url = "redis://localhost:6379/0"

[keymap]
refresh = "ctrl+r"
requeue = "R"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- validation ----------------------------------------------------------------------------


def test_a_full_profile_validates_to_its_values() -> None:
    profile = validate_profile_fields(
        {
            "url": "redis://h:6379/1",
            "broker_url": "amqp://guest@rabbit//",
            "prefix": "dead:",
            "refresh": 1,
            "inspect_timeout": 0.5,
            "hard_limit": 60,
            "grace": 0,
            "readonly": True,
            "password_env": "REDIS_PW",
            "broker_password_env": "AMQP_PW",
            "timeout": 2,
        },
        name="p",
    )
    assert profile == Profile(
        name="p",
        url="redis://h:6379/1",
        broker_url="amqp://guest@rabbit//",
        prefix="dead:",
        refresh=1.0,
        inspect_timeout=0.5,
        hard_limit=60.0,
        grace=0.0,
        readonly=True,
        password_env="REDIS_PW",  # noqa: S106 - a variable name, not a password
        broker_password_env="AMQP_PW",  # noqa: S106
        timeout=2.0,
    )
    assert isinstance(profile.refresh, float)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"url": "http://h"}, "url", "not a Redis URL"),
        ({"url": "amqp://h//"}, "url", "redis://"),
        ({"url": ""}, "url", "must not be empty"),
        ({"url": 6379}, "url", "must be a string"),
        ({"url": "redis://"}, "url", "names no host"),
        ({"url": "redis://h:notaport/0"}, "url", "not a valid URL"),
        ({"url": "unix://"}, "url", "socket path"),
        ({}, "url", "is required"),
        ({"url": "redis://h", "refresh": -1}, "refresh", "more than zero"),
        ({"url": "redis://h", "refresh": 0}, "refresh", "more than zero"),
        ({"url": "redis://h", "refresh": "2"}, "refresh", "number of seconds"),
        ({"url": "redis://h", "refresh": True}, "refresh", "number of seconds"),
        ({"url": "redis://h", "refresh": float("nan")}, "refresh", "more than zero"),
        ({"url": "redis://h", "grace": -0.5}, "grace", "zero or more"),
        ({"url": "redis://h", "hard_limit": 0}, "hard_limit", "more than zero"),
        ({"url": "redis://h", "inspect_timeout": -1}, "inspect_timeout", "more than zero"),
        ({"url": "redis://h", "timeout": 0}, "timeout", "more than zero"),
        ({"url": "redis://h", "readonly": "yes"}, "readonly", "true or false"),
        ({"url": "redis://h", "readonly": 1}, "readonly", "true or false"),
        ({"url": "redis://h", "prefix": ""}, "prefix", "non-empty"),
        ({"url": "redis://h", "prefix": "a b"}, "prefix", "without spaces"),
        ({"url": "redis://h", "prefix": "dlq"}, "prefix", "must end with ':' (like 'dlq:')"),
        ({"url": "redis://h", "prefix": ":"}, "prefix", "must end with ':'"),
        ({"url": "redis://a;redis://b"}, "url", "list of URLs"),
        ({"url": "redis://h", "broker_url": "redis://a;nope://b"}, "broker_url", "kombu knows"),
        ({"url": "redis://h", "broker_url": "redis://a;"}, "broker_url", "empty URL"),
        ({"url": "redis://h", "broker_url": "redis://a;redis://b:x"}, "broker_url", "not a valid"),
        (
            {
                "url": "redis://h",
                "broker_url": "redis://a;redis://:pw@b",
                "broker_password_env": "PW",
            },
            "broker_password_env",
            "one place",
        ),
        ({"url": "redis://h", "password_env": "1BAD"}, "password_env", "variable name"),
        ({"url": "redis://h", "broker_url": "nosuch://x"}, "broker_url", "kombu knows"),
        ({"url": "redis://h", "broker_url": "rabbit"}, "broker_url", "kombu knows"),
        ({"url": "redis://h", "colour": "red"}, "colour", "unknown setting"),
        ({"url": "redis://:pw@h", "password_env": "PW"}, "password_env", "one place"),
        ({"url": "redis://h", "broker_password_env": "PW"}, "broker_password_env", "broker_url"),
        (
            {"url": "redis://h", "broker_url": "amqp://u:pw@r//", "broker_password_env": "PW"},
            "broker_password_env",
            "one place",
        ),
    ],
)
def test_a_bad_setting_names_its_field(fields: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ProfileError) as caught:
        validate_profile_fields(fields, name="p")
    assert caught.value.field == field
    assert words in caught.value.message
    assert str(caught.value).startswith(f"{field}: ")
    assert "\n" not in str(caught.value)


def test_an_error_never_shows_a_password_from_the_url() -> None:
    with pytest.raises(ProfileError) as caught:
        validate_profile_fields({"url": "http://user:hunter2@h/"}, name="p")
    assert "hunter2" not in str(caught.value)
    assert "***" in str(caught.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "redis://:hunter2@a;redis://:hunter2@b"},
        {"url": "redis://:hunter2@a:port"},
        {"url": "redis://:hunter2"},  # no host: urlsplit reads the password as a port
        {"url": "redis://h", "broker_url": "amqp://u:hunter2"},
        {"url": "redis://h", "broker_url": "amqp://u:hunter2@a;nope://u:hunter2@b"},
        {"url": "redis://h", "broker_url": "sentinel://:hunter2@a:26379;sentinel://:hunter2@b:x"},
    ],
)
def test_an_error_never_shows_a_password_from_a_url_list(fields: dict[str, object]) -> None:
    with pytest.raises(ProfileError) as caught:
        validate_profile_fields(fields, name="p")
    assert "hunter2" not in str(caught.value)


def test_a_broker_url_may_be_a_failover_list() -> None:
    broker = "sentinel://h1:26379;sentinel://h2:26379"
    profile = validate_profile_fields({"url": "redis://h", "broker_url": broker}, name="p")
    assert profile.broker_url == broker
    profile = validate_profile_fields(
        {"url": "redis://h", "broker_url": "amqp://a;amqp://b", "broker_password_env": "PW"},
        name="p",
    )
    assert profile.broker_password_env == "PW"  # noqa: S105 - a variable name
    assert validate_profile_fields({"url": "redis://h", "prefix": "dead:"}, name="p").prefix == (
        "dead:"
    )


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "naïve/", None])
def test_bad_profile_names(name: object) -> None:
    with pytest.raises(ProfileError) as caught:
        validate_profile_fields({"url": "redis://h"}, name=name)  # type: ignore[arg-type]
    assert caught.value.field == "name"


def test_editor_text_fields_are_parsed_and_empty_means_default() -> None:
    profile = validate_profile_fields(
        {
            "name": "ed",
            "url": " redis://h:1/0 ",
            "refresh": "2.5",
            "grace": "0",
            "readonly": "yes",
            "prefix": "",
            "broker_url": "",
            "password_env": "",
        },
        from_text=True,
    )
    assert profile == Profile(name="ed", url="redis://h:1/0", refresh=2.5, grace=0.0, readonly=True)
    with pytest.raises(ProfileError) as caught:
        validate_profile_fields(
            {"name": "ed", "url": "redis://h", "refresh": "soon"}, from_text=True
        )
    assert caught.value.field == "refresh"


def test_validate_field_checks_one_value() -> None:
    assert validate_field("grace", 3) == 3.0
    with pytest.raises(ProfileError, match="hard_limit: must be more than zero"):
        validate_field("hard_limit", -5)


def test_keymap_is_a_table_of_strings() -> None:
    assert validate_keymap({"quit": "q", "refresh": "ctrl+r"}) == {"quit": "q", "refresh": "ctrl+r"}
    with pytest.raises(ProfileError) as caught:
        validate_keymap({"quit": 5})
    assert caught.value.field == "keymap.quit"
    with pytest.raises(ProfileError):
        validate_keymap(["q"])


# -- the file ------------------------------------------------------------------------------


def test_config_path_precedence(tmp_path: Path) -> None:
    explicit = tmp_path / "a.toml"
    from_env = tmp_path / "b.toml"
    assert config_path(explicit, {CONFIG_ENV: str(from_env)}) == explicit
    assert config_path(None, {CONFIG_ENV: str(from_env)}) == from_env
    default = config_path(None, {})
    assert default.name == "config.toml"
    assert default.parent.name == "celery-morgue"


def test_the_example_file_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "config.toml", EXAMPLE))
    assert config.exists
    assert config.default == "prod"
    assert config.names() == ["local", "prod"]
    prod = config.resolve()
    assert prod.url.startswith("rediss://redis.example.com:6380/0")
    assert prod.readonly is True
    assert prod.grace == 0.0
    assert prod.hard_limit == 600.0
    assert prod.broker_password_env == "RABBIT_PASSWORD"  # noqa: S105 - a variable name
    assert config.resolve("local") == Profile(name="local", url="redis://localhost:6379/0")
    assert config.keymap == {"refresh": "ctrl+r", "requeue": "R"}


def test_a_missing_file_is_an_empty_config_that_says_how_to_add_a_profile(tmp_path: Path) -> None:
    config = load_config(tmp_path / "nothing.toml")
    assert not config.exists
    assert config.profiles == {}
    with pytest.raises(NoProfileError) as caught:
        config.resolve()
    assert "morgue profiles add" in str(caught.value)
    assert "--url" in str(caught.value)


def test_resolution_rules(tmp_path: Path) -> None:
    one = Config(path=tmp_path / "c.toml", profiles={"a": Profile(name="a", url="redis://h")})
    assert one.resolve().name == "a"  # the only profile needs no default
    two = Config(
        path=tmp_path / "c.toml",
        profiles={"a": Profile(name="a", url="redis://h"), "b": Profile(name="b", url="redis://i")},
    )
    with pytest.raises(NoProfileError, match="no default profile"):
        two.resolve()
    with pytest.raises(UnknownProfileError) as caught:
        two.resolve("zz")
    assert str(caught.value).endswith("(known profiles: a, b)")
    two.default = "gone"
    with pytest.raises(ConfigError, match="default profile 'gone' does not exist"):
        two.resolve()


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ('default = "a"\n[profiles.a\nurl = "redis://h"\n', 2, 12),
        ('[profiles.a]\nurl = "redis://h\n', 2, 17),
        ('[profiles.a]\nurl = "redis://h"\nurl = "redis://i"\n', 3, 18),
        ("default =", 1, 10),
    ],
)
def test_a_syntax_error_names_the_file_line_and_column(
    tmp_path: Path, text: str, line: int, column: int
) -> None:
    path = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigSyntaxError) as caught:
        load_config(path)
    assert (caught.value.line, caught.value.column) == (line, column)
    message = str(caught.value)
    assert str(path) in message
    assert f"line {line}, column {column}" in message
    assert "\n" not in message


def test_a_file_that_is_not_utf8_names_the_position(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[profiles.a]\nurl = "redis://h\xff"\n')
    with pytest.raises(ConfigSyntaxError) as caught:
        load_config(path)
    assert (caught.value.line, caught.value.column) == (2, 17)
    assert "UTF-8" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('colour = "red"\n', "unknown key(s) colour"),
        ('[profiles.a]\nurl = "redis://h"\nrefesh = 2\n', "profile 'a': refesh: unknown setting"),
        ('[profiles.a]\nurl = "http://h"\n', "profile 'a': url:"),
        ('[profiles.a]\nurl = "redis://h"\ngrace = -1\n', "profile 'a': grace: must be zero"),
        ("default = 3\n", "default must be a profile name"),
        ('profiles = "x"\n', "profiles must be tables"),
        ('[profiles]\na = "redis://h"\n', "profiles.a must be a table"),
        ("[keymap]\nquit = 1\n", "keymap.quit: must be a key name"),
    ],
)
def test_bad_content_is_one_line_naming_file_and_field(
    tmp_path: Path, text: str, words: str
) -> None:
    path = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert words in str(caught.value)
    assert str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


def test_save_is_atomic_0600_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.toml"
    original = load_config(write(tmp_path / "example.toml", EXAMPLE))
    original.path = path
    save_config(original)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]  # no temp files
    again = load_config(path)
    assert again.profiles == original.profiles
    assert again.default == "prod"
    assert again.keymap == original.keymap
    # Defaults are not written out: a hand-written profile stays as short as it was.
    written = tomllib.loads(path.read_text())
    assert written["profiles"]["local"] == {"url": "redis://localhost:6379/0"}
    assert written["profiles"]["prod"]["grace"] == 0.0  # not a default: kept


def test_save_makes_an_existing_readable_file_0600(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[profiles.a]\nurl = "redis://h"\n')
    os.chmod(path, 0o644)
    update_config(path, lambda config: setattr(config, "default", "a"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_config(path).default == "a"


def test_a_file_that_does_not_load_is_never_overwritten(tmp_path: Path) -> None:
    text = b'default = "a"\n[profiles.a\nurl = "redis://h"\n# my notes\n'
    path = tmp_path / "config.toml"
    path.write_bytes(text)
    before = path.stat().st_mtime_ns
    with pytest.raises(ConfigSyntaxError):
        update_config(path, lambda config: setattr(config, "default", "b"))
    assert path.read_bytes() == text
    assert path.stat().st_mtime_ns == before
    invalid = b'[profiles.a]\nurl = "redis://h"\nrefresh = -1\n'
    path.write_bytes(invalid)
    with pytest.raises(ConfigError):
        update_config(path, lambda config: setattr(config, "default", "a"))
    assert path.read_bytes() == invalid


def test_a_failing_change_writes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[profiles.a]\nurl = "redis://h"\n')
    before = path.read_bytes()

    def change(config: Config) -> None:
        config.profiles.clear()
        raise ConfigError("no")

    with pytest.raises(ConfigError):
        update_config(path, change)
    assert path.read_bytes() == before


def test_as_dict_redacts_every_url() -> None:
    profile = Profile(name="p", url="redis://:hunter2@h:6379/0", broker_url="amqp://u:rabbitpw@r//")
    shown = repr(profile.as_dict())
    assert "hunter2" not in shown
    assert "rabbitpw" not in shown
    assert profile.as_dict()["url"] == "redis://:***@h:6379/0"
    failover = Profile(name="f", url="redis://h", broker_url="amqp://u:pw1@a;amqp://u:pw2@b")
    assert failover.as_dict()["broker_url"] == "amqp://u:***@a;amqp://u:***@b"


# -- the prefix: refused where it is typed, and in a file that already holds it -------------


def test_a_prefix_without_a_colon_is_refused_by_profiles_add(tmp_path: Path) -> None:
    morgue = Morgue(tmp_path / "config.toml")
    result = morgue("profiles", "add", "x", "--url", "redis://127.0.0.1:1/0", "--prefix", "dlq")
    assert result.returncode == 2
    assert one_error_line(result) == "Error: --prefix: must end with ':' (like 'dlq:'), got 'dlq'"
    assert not morgue.config.exists()
    # An existing file is left as it was, byte for byte, by add and by add --replace.
    assert morgue("profiles", "add", "x", "--url", "redis://127.0.0.1:1/0").returncode == 0
    before = morgue.config.read_bytes()
    for extra in ([], ["--replace"]):
        result = morgue(
            "profiles", "add", "x", "--url", "redis://127.0.0.1:1/0", "--prefix", "dlq", *extra
        )
        assert result.returncode == 2
        assert "--prefix: must end with ':'" in one_error_line(result)
        assert morgue.config.read_bytes() == before


def test_a_config_file_holding_a_bad_prefix_fails_in_one_line(tmp_path: Path) -> None:
    morgue = Morgue(tmp_path / "config.toml")
    morgue.config.write_text('[profiles.x]\nurl = "redis://127.0.0.1:1/0"\nprefix = "dlq"\n')
    for args in (["--profile", "x", "queues"], ["--profile", "x", "dlq", "list", "celery"]):
        result = morgue(*args)
        assert result.returncode == 1, result.stderr
        assert one_error_line(result) == (
            f"Error: {morgue.config}: profile 'x': prefix: must end with ':' (like 'dlq:'), "
            "got 'dlq'"
        )
    with pytest.raises(ConfigError, match="profile 'x': prefix: must end with ':'"):
        load_config(morgue.config)


def test_the_profile_editor_refuses_a_bad_prefix() -> None:
    text = {field.key: "" for field in TEXT_FIELDS}
    text.update(name="x", url="redis://127.0.0.1:1/0", prefix="dlq")
    draft, errors = check_form(
        FormValues(text=text, store_passwords=False, readonly=False), replaces=None, taken=()
    )
    assert draft is None
    assert errors == {"prefix": "must end with ':' (like 'dlq:'), got 'dlq'"}


# -- connecting ----------------------------------------------------------------------------

PASSWORD = "pr0file-s3cret:@/%"  # noqa: S105 - the test password


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    server = RedisServer(password=PASSWORD)
    server.start()
    yield server
    server.close()


def test_connect_profile_takes_the_password_from_the_environment(
    locked_redis: RedisServer,
) -> None:
    profile = Profile(name="locked", url=locked_redis.url, password_env="LOCKED_PW", timeout=5)  # noqa: S106
    with connect_profile(profile, environ={"LOCKED_PW": PASSWORD}) as connection:
        assert connection.client.ping()
        entry_id = connection.dlq.add(
            build_entry(
                task_id="t-locked",
                task="proj.task",
                queue="locked",
                args=[1],
                kwargs={},
                exception=ValueError("x"),
                traceback="",
                retries=0,
                hostname="h",
                delivery_info={},
                root_id=None,
                parent_id=None,
            )
        )
        assert connection.dlq.get("locked", entry_id).task_id == "t-locked"
        # The broker is the same Redis: the password must reach it too.
        connection.app.send_task("proj.task", args=[1], queue="parked-locked")
        assert connection.client.llen("parked-locked") == 1
        assert PASSWORD not in connection.url
        assert PASSWORD not in connection.broker
        assert connection.scrub(f"oops {PASSWORD} there") == "oops *** there"
        connection.client.delete("parked-locked", "dlq:locked")


def test_a_missing_password_variable_names_it(locked_redis: RedisServer) -> None:
    profile = Profile(name="locked", url=locked_redis.url, password_env="LOCKED_PW")  # noqa: S106
    with pytest.raises(ProfileError) as caught:
        connect_profile(profile, environ={})
    assert caught.value.field == "password_env"
    assert "LOCKED_PW is not set" in str(caught.value)


def test_the_control_app_is_json_only_and_does_not_retry() -> None:
    profile = Profile(name="p", url="redis://127.0.0.1:1/0")
    with connect_profile(profile, environ={}) as connection:
        conf = connection.app.conf
        assert conf.task_serializer == "json"
        assert conf.accept_content == ["json"]
        assert conf.broker_connection_retry is False
        assert conf.task_publish_retry is False
