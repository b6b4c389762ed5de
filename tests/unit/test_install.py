"""``pulse.install(app)`` on a user's own Celery app (pulse/agent/install.py)."""

import pytest
from celery import Celery

import pulse
from pulse.agent.install import CELERY_SETTINGS, Agent
from pulse.settings import ConfigError


def user_app(**kwargs) -> Celery:
    return Celery("theirs", broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/0", **kwargs)


def test_it_turns_on_what_pulse_needs_and_leaves_the_rest_alone():
    app = user_app()
    app.conf.update(task_default_queue="orders", task_acks_late=True, result_expires=60)
    agent = pulse.install(app, env={})
    assert isinstance(agent, Agent) and app.pulse is agent
    for key, value in CELERY_SETTINGS.items():
        assert app.conf[key] == value, key
    kept = (app.conf.task_default_queue, app.conf.task_acks_late, app.conf.result_expires)
    assert kept == ("orders", True, 60)
    assert app.conf.redis_socket_timeout == Celery().conf.redis_socket_timeout  # not Pulse's to set


def test_it_is_idempotent():
    app = user_app()
    first = pulse.install(app, env={"PULSE_REGISTRY_PREFIX": "a:"})
    sender_class = app.amqp_cls
    assert pulse.install(app, env={"PULSE_REGISTRY_PREFIX": "b:"}) is first
    assert app.amqp_cls is sender_class and first.registry.prefix == "a:"


def test_recording_wraps_the_sender_before_and_after_the_amqp_layer_is_built():
    early = user_app()
    pulse.install(early, env={})
    assert getattr(early.amqp.send_task_message, "pulse_recording", False)
    late = user_app()
    sender = late.amqp.send_task_message  # the AMQP layer exists before install
    pulse.install(late, env={})
    assert late.amqp.send_task_message is not sender
    assert getattr(late.amqp.send_task_message, "pulse_recording", False)


def test_their_own_amqp_class_is_kept_under_the_recording():
    from celery.app.amqp import AMQP

    class TheirAMQP(AMQP):
        marker = "theirs"

    app = user_app(amqp=TheirAMQP)
    pulse.install(app, env={})
    assert isinstance(app.amqp, TheirAMQP) and app.amqp.marker == "theirs"
    assert getattr(app.amqp.send_task_message, "pulse_recording", False)


def test_the_registry_lives_in_the_redis_result_backend_or_pulse_redis_url():
    assert "result backend" in pulse.install(user_app(), env={}).registry_location()
    app = Celery("theirs", broker="amqp://guest@127.0.0.1:1//", backend="rpc://")
    here = pulse.install(app, env={"PULSE_REDIS_URL": "redis://127.0.0.1:1/3"}).registry_location()
    assert here.startswith("PULSE_REDIS_URL")


def test_no_redis_for_the_registry_is_a_clear_error_naming_what_to_set():
    app = Celery("theirs", broker="amqp://guest@127.0.0.1:1//", backend="rpc://")
    agent = pulse.install(app, env={})
    with pytest.raises(ConfigError, match="PULSE_REDIS_URL") as refused:
        agent.registry_location()
    assert "'rpc://'" in str(refused.value)
    with pytest.raises(ConfigError, match="PULSE_REDIS_URL"):
        agent.registry.client  # noqa: B018 - the first use is what raises


def test_passwords_never_appear_in_the_location_or_the_error():
    app = Celery("theirs", broker="amqp://guest@127.0.0.1:1//", backend="rpc://")
    located = pulse.install(app, env={"PULSE_REDIS_URL": "redis://user:s3cret@127.0.0.1:1/0"})
    assert "s3cret" not in located.registry_location()


@pytest.mark.parametrize(("key", "value"), [("PULSE_REDIS_URL", "http://x"), ("PULSE_RETENTION", "soon"),
                                            ("PULSE_REGISTRY_CAP", "0"), ("PULSE_PROGRESS_INTERVAL", "-1")])
def test_bad_settings_are_refused_naming_the_key_and_value(key, value):
    with pytest.raises(ConfigError, match=f"{key}={value!r}"):
        pulse.install(user_app(), env={key: value})


def test_importing_pulse_loads_no_server_library():
    import subprocess
    import sys

    code = ("import sys, pulse; pulse.install; pulse.report_progress; pulse.fail; pulse.mint_token; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('flask', 'flask_socketio', 'socketio', 'engineio', 'eventlet') "
            "or m.startswith('pulse.server')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
