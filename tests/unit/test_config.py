"""Settings are read in one place and fail with a message naming the key."""

import pytest

from pulse.settings import ConfigError, load_config

TOKEN = "x" * 20


def test_defaults():
    config = load_config({"PULSE_TOKEN": TOKEN})
    assert (config["HOST"], config["PORT"], config["ASYNC_MODE"]) == ("127.0.0.1", 5000, "eventlet")
    assert config["LAUNCH_ALLOW"] == ()  # nothing may be launched unless listed
    assert config["PUSH_INTERVAL"] == 0.1


def test_secret_key_follows_the_token_unless_set():
    first, second = load_config({"PULSE_TOKEN": TOKEN}), load_config({"PULSE_TOKEN": "y" * 20})
    assert first["SECRET_KEY"] != second["SECRET_KEY"]
    assert load_config({"PULSE_TOKEN": TOKEN, "PULSE_SECRET_KEY": "s"})["SECRET_KEY"] == "s"


@pytest.mark.parametrize(
    ("env", "key"),
    [({}, "PULSE_TOKEN"), ({"PULSE_TOKEN": "short"}, "PULSE_TOKEN"),
     ({"PORT": "http"}, "PORT"), ({"PORT": "70000"}, "PORT"),
     ({"PULSE_ASYNC_MODE": "gevent"}, "PULSE_ASYNC_MODE"),
     ({"PULSE_PUSH_INTERVAL": "0.01"}, "PULSE_PUSH_INTERVAL")],
)
def test_bad_settings_name_their_key(env, key):
    env = {"PULSE_TOKEN": TOKEN, **env} if key != "PULSE_TOKEN" else env
    with pytest.raises(ConfigError, match=key):
        load_config(env)


def test_launch_allow_list_is_comma_separated():
    config = load_config({"PULSE_TOKEN": TOKEN, "PULSE_LAUNCH_ALLOW": " a.b , c.d ,"})
    assert config["LAUNCH_ALLOW"] == ("a.b", "c.d")
