"""Settings are read in one place and fail with a message naming the key."""

import pytest

from pulse.settings import ConfigError, grant_key_from_env, load_config

TOKEN = "x" * 20


def test_defaults():
    config = load_config({"PULSE_TOKEN": TOKEN})
    assert (config["HOST"], config["PORT"], config["ASYNC_MODE"]) == ("127.0.0.1", 5000, "eventlet")
    assert config["LAUNCH_ALLOW"] == ()  # nothing may be launched unless listed
    assert config["PUSH_INTERVAL"] == 0.1


def test_keys_follow_the_master_key_one_per_purpose():
    first, second = load_config({"PULSE_TOKEN": TOKEN}), load_config({"PULSE_TOKEN": "y" * 20})
    assert first["SECRET_KEY"] != second["SECRET_KEY"] and first["GRANT_KEY"] != second["GRANT_KEY"]
    master = "m" * 32
    keyed = load_config({"PULSE_TOKEN": TOKEN, "PULSE_SECRET_KEY": master})
    # Neither key is the master itself, and the two differ: the grant key opens no session.
    assert master not in (keyed["SECRET_KEY"], keyed["GRANT_KEY"])
    assert keyed["SECRET_KEY"] != keyed["GRANT_KEY"]
    assert keyed["GRANT_KEY"] == grant_key_from_env({"PULSE_SECRET_KEY": master})
    own = load_config({"PULSE_TOKEN": TOKEN, "PULSE_GRANT_KEY": "g" * 32})
    assert own["GRANT_KEY"] == "g" * 32 and own["SECRET_KEY"] == first["SECRET_KEY"]


@pytest.mark.parametrize(("env", "key"), [
    ({"PULSE_SECRET_KEY": "s" * 31}, "PULSE_SECRET_KEY"),
    ({"PULSE_GRANT_KEY": "g" * 31}, "PULSE_GRANT_KEY"),
    ({"PULSE_GRANT_KEY": "x" * 40, "PULSE_TOKEN": "x" * 40}, "PULSE_GRANT_KEY"),
    ({"PULSE_GRANT_MAX_TTL": "0"}, "PULSE_GRANT_MAX_TTL"),
    ({"PULSE_SESSION_LIFETIME": "forever"}, "PULSE_SESSION_LIFETIME"),
])
def test_keys_have_a_minimum_length_and_differ(env, key):
    with pytest.raises(ConfigError, match=key):
        load_config({"PULSE_TOKEN": TOKEN, **env})


@pytest.mark.parametrize(
    ("env", "key"),
    [({}, "PULSE_TOKEN"), ({"PULSE_TOKEN": "short"}, "PULSE_TOKEN"),
     ({"PORT": "http"}, "PORT"), ({"PORT": "70000"}, "PORT"),
     ({"PULSE_ASYNC_MODE": "gevent"}, "PULSE_ASYNC_MODE"),
     ({"PULSE_PUSH_INTERVAL": "0.01"}, "PULSE_PUSH_INTERVAL"),
     ({"PULSE_ALERT_TIMEOUT": "31"}, "PULSE_ALERT_TIMEOUT"),
     ({"PULSE_ALERT_TIMEOUT": "0.1"}, "PULSE_ALERT_TIMEOUT"),
     ({"PULSE_ALERT_INTERVAL": "0.1"}, "PULSE_ALERT_INTERVAL")],
)
def test_bad_settings_name_their_key(env, key):
    env = {"PULSE_TOKEN": TOKEN, **env} if key != "PULSE_TOKEN" else env
    with pytest.raises(ConfigError, match=key):
        load_config(env)


def test_launch_allow_list_is_comma_separated():
    config = load_config({"PULSE_TOKEN": TOKEN, "PULSE_LAUNCH_ALLOW": " a.b , c.d ,"})
    assert config["LAUNCH_ALLOW"] == ("a.b", "c.d")
