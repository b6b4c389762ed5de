"""Per-task tokens: minting, checking, scope, revocation, the public view, CORS and sockets."""

import time

import pytest

from pulse.agent.tokens import TokenError, mint_token, read_token
from pulse.settings import grant_key_from_env
from tests.conftest import demo_server

from ..conftest import TOKEN

ORIGIN = "http://127.0.0.1:8123"


@pytest.fixture
def app(redis_url):
    import uuid

    return demo_server({"PULSE_TOKEN": TOKEN, "REDIS_URL": redis_url, "PULSE_ASYNC_MODE": "threading",
                       "PULSE_EMBED_ORIGINS": ORIGIN, "PULSE_REGISTRY_PREFIX": f"k{uuid.uuid4().hex[:8]}:"})


@pytest.fixture
def registry(app):
    registry = app.extensions["pulse_registry"]
    progress = {"current": 1, "total": 4, "percent": 25.0}
    registry.write("a", "running", fields={"name": "job", "state": "PROGRESS", "worker": "w@h",
                                           "args": "['secret']", "progress": progress})
    registry.write("b", "running", fields={"name": "job"})
    registry.write("f", "failed", fields={"name": "job", "state": "FAILURE", "failure": {
        "exc_type": "ValueError", "exc_message": "bad", "traceback": "tb",
        "details": {"step": 2, "input": "private"}, "exposed": ["step"]}})
    return registry


def mint(app, **kwargs):
    return mint_token(app.config["GRANT_KEY"], **kwargs)[0]


def test_the_host_app_mints_with_the_grant_key(app):
    secret = grant_key_from_env({"PULSE_TOKEN": TOKEN})
    assert secret == app.config["GRANT_KEY"] != app.config["SECRET_KEY"]
    grant = read_token(secret, mint_token(secret, task_id="a", ttl=60, cancel=True)[0])
    assert (grant.task_id, grant.group_id, grant.cancel) == ("a", None, True)
    with pytest.raises(ValueError):
        mint_token(secret, task_id="a", group_id="g")
    with pytest.raises(ValueError):
        mint_token(secret, task_id="a", ttl=10 * 86400)


def test_expired_and_tampered_tokens(app):
    secret = app.config["GRANT_KEY"]
    old = mint_token(secret, task_id="a", ttl=5, now=time.time() - 10)[0]
    with pytest.raises(TokenError, match="expired") as expired:
        read_token(secret, old)
    assert expired.value.status == 401
    good = mint_token(secret, task_id="a")[0]
    for bad in (good[:-2] + ("AA" if not good.endswith("AA") else "BB"), "garbage", ""):
        with pytest.raises(TokenError, match="invalid token"):
            read_token(secret, bad)
    with pytest.raises(TokenError):
        read_token("another-secret", good)


def test_a_token_reads_its_task_in_the_public_view_only(app, registry):
    client, token = app.test_client(), mint(app, task_id="a")
    for kwargs in ({"headers": {"Authorization": f"Bearer {token}"}}, {"query_string": {"token": token}}):
        data = client.get("/api/tasks/a", **kwargs).get_json()
        assert data["progress"]["percent"] == 25.0 and data["status"] == "running"
        assert "args" not in data and "worker" not in data and data["can_cancel"] is False
    assert client.get("/api/tasks/b", query_string={"token": token}).status_code == 403
    assert client.get("/api/tasks", query_string={"token": token}).status_code == 401
    assert client.post("/api/tasks/a/skip", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_the_public_failure_shows_only_exposed_details(app, registry):
    data = app.test_client().get("/api/tasks/f", query_string={"token": mint(app, task_id="f")}).get_json()
    assert data["failure"] == {"exc_type": "ValueError", "exc_message": "bad", "details": {"step": 2}}
    full = app.test_client().get("/api/tasks/f", headers={"Authorization": f"Bearer {TOKEN}"}).get_json()
    assert full["failure"]["details"] == {"step": 2, "input": "private"}


def test_a_token_follows_replays(app, registry):
    registry.write("a2", "scheduled", fill={"replay_of": "a"})
    token = mint(app, task_id="a")
    assert app.test_client().get("/api/tasks/a2", query_string={"token": token}).status_code == 200


def test_revoked_tokens_are_refused(app, registry):
    client, token = app.test_client(), mint(app, task_id="a")
    response = client.delete("/api/tasks/a/tokens", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    refused = client.get("/api/tasks/a", query_string={"token": token})
    assert refused.status_code == 403 and "revoked" in refused.get_json()["error"]
    cutoff = response.get_json()["revoked_before"]
    # The cut-off lies PULSE_GRANT_SKEW ahead: what a host clock up to that far ahead minted
    # before the revocation is revoked, and so is what is minted in those seconds after it.
    assert cutoff >= time.time() + app.config["GRANT_SKEW"] - 5
    for ahead in (0, 20):
        token = mint(app, task_id="a", now=time.time() + ahead)
        assert client.get("/api/tasks/a", query_string={"token": token}).status_code == 403
    assert client.get("/api/tasks/a", query_string={"token": mint(app, task_id="a", now=cutoff + 0.5)}) \
        .status_code == 401  # from the future, for now: after the skew it is good
    later = mint(app, task_id="a", now=cutoff + 1)
    assert read_token(app.config["GRANT_KEY"], later, now=cutoff + 1).task_id == "a"


def test_a_host_clock_ahead_cannot_escape_revocation_or_the_lifetime_cap(app, registry):
    """The server trusts neither the host's issue time nor its expiry beyond its own bounds."""
    client = app.test_client()
    ahead = mint(app, task_id="a", now=time.time() + 3600, ttl=600)  # minted "in an hour"
    refused = client.get("/api/tasks/a", query_string={"token": ahead})
    assert refused.status_code == 401 and "in the future" in refused.get_json()["error"]
    # The cap on a grant's life: a 7-day grant minted 3 days ago, then the server caps grants at a day.
    old = mint(app, task_id="a", ttl=7 * 86400, now=time.time() - 3 * 86400)
    assert client.get("/api/tasks/a", query_string={"token": old}).status_code == 200
    app.config["GRANT_MAX_TTL"] = 86400.0
    expired = client.get("/api/tasks/a", query_string={"token": old})
    assert expired.status_code == 401 and "expired" in expired.get_json()["error"]


def test_minting_through_the_api(app, registry):
    client, headers = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    answer = client.post("/api/tasks/a/token", json={"ttl": 60, "cancel": True}, headers=headers).get_json()
    assert answer["task"] == "a" and answer["expires_at"] > time.time() + 50
    assert read_token(app.config["GRANT_KEY"], answer["token"]).cancel is True
    assert client.post("/api/tasks/nope/token", headers=headers).status_code == 404
    assert client.post("/api/tasks/a/token", json={"ttl": 0}, headers=headers).status_code == 400
    assert client.post("/api/tasks/a/token").status_code == 401


def test_cancel_needs_the_cancel_right(app, registry):
    client = app.test_client()
    plain = client.post("/api/tasks/a/cancel", headers={"Authorization": f"Bearer {mint(app, task_id='a')}"})
    assert plain.status_code == 403
    allowed = client.post("/api/tasks/a/cancel",
                          headers={"Authorization": f"Bearer {mint(app, task_id='a', cancel=True)}"})
    assert allowed.status_code == 200
    assert allowed.get_json()["revoke_requested_at"] is not None and allowed.get_json()["can_cancel"] is True
    other = client.post("/api/tasks/b/cancel",
                        headers={"Authorization": f"Bearer {mint(app, task_id='a', cancel=True)}"})
    assert other.status_code == 403


def test_cors_only_for_listed_origins_and_token_routes(app, registry):
    client, token = app.test_client(), mint(app, task_id="a")
    listed = client.get("/api/tasks/a", query_string={"token": token}, headers={"Origin": ORIGIN})
    assert listed.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = client.get("/api/tasks/a", query_string={"token": token}, headers={"Origin": "http://evil.test"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options("/api/tasks/a/cancel", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    counts = client.get("/api/tasks/counts", headers={"Origin": ORIGIN, "Authorization": f"Bearer {TOKEN}"})
    assert "Access-Control-Allow-Origin" not in counts.headers  # nothing else is opened


def test_groups_and_their_aggregate(app, registry):
    for index, (status, current, total) in enumerate([("finished", 10, 10), ("running", 5, 10),
                                                       ("scheduled", 0, 30)]):
        registry.write(f"m{index}", status, fields={
            "group_id": "grp", "group_index": index, "state": "SUCCESS" if status == "finished" else None,
            "progress": {"current": current, "total": total, "percent": 100.0 * current / total}})
    client = app.test_client()
    unit = client.get("/api/groups/grp", headers={"Authorization": f"Bearer {TOKEN}"}).get_json()
    assert unit["kind"] == "group" and [m["id"] for m in unit["members"]] == ["m0", "m1", "m2"]
    assert unit["progress"]["percent"] == 30.0 and unit["status"] == "running"  # (10 + 5) / 50
    group_token = mint(app, group_id="grp")
    public = client.get("/api/groups/grp", query_string={"token": group_token}).get_json()
    assert "args" not in public["members"][0]
    assert client.get("/api/groups/grp", query_string={"token": mint(app, task_id="m0")}).status_code == 403
    assert client.get("/api/groups/none", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    registry.write("m1", "running", fields={"progress": {"current": 1, "total": 10, "percent": 10.0}})
    again = client.get("/api/groups/grp", headers={"Authorization": f"Bearer {TOKEN}"}).get_json()
    assert again["progress"]["percent"] == 30.0  # never backwards while it runs


def test_sockets_with_task_tokens(app, registry):
    socketio = app.extensions["socketio"]
    app.extensions["pulse_monitor"].connected = True  # as if the event stream were up
    client = socketio.test_client(app, auth={"token": mint(app, task_id="a")})
    assert client.is_connected()
    assert client.emit("subscribe", {"task": "a"}, callback=True)["task"]["status"] == "running"
    assert "error" in client.emit("subscribe", {"task": "b"}, callback=True)
    assert "error" in client.emit("subscribe", {"dashboard": True}, callback=True)
    expired = mint_token(app.config["GRANT_KEY"], task_id="a", ttl=1, now=time.time() - 5)[0]
    assert not socketio.test_client(app, auth={"token": expired}).is_connected()
    app.extensions["pulse_live"].task_changed(app.extensions["pulse_store"].get_json("a"))
    pushed = client.get_received()[0]["args"][0]
    assert pushed["id"] == "a" and "args" not in pushed


def test_a_foreign_origin_socket_needs_a_task_token(app, registry):
    socketio = app.extensions["socketio"]
    foreign = {"Origin": ORIGIN}
    assert not socketio.test_client(app, auth={"token": TOKEN}, headers=foreign).is_connected()
    assert socketio.test_client(app, auth={"token": mint(app, task_id="a")}, headers=foreign).is_connected()


def test_embed_page_is_framable_only_by_listed_origins(app, registry):
    response = app.test_client().get("/embed/a", query_string={"token": mint(app, task_id="a")})
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"].endswith(f"; frame-ancestors 'self' {ORIGIN}")
    assert "X-Frame-Options" not in response.headers
    assert app.test_client().get("/embed/bad%20id").status_code == 400


def test_a_connected_socket_loses_its_task_when_the_token_is_revoked(app, registry):
    socketio = app.extensions["socketio"]
    client = socketio.test_client(app, auth={"token": mint(app, task_id="a")})
    assert client.emit("subscribe", {"task": "a"}, callback=True)["task"]["id"] == "a"
    time.sleep(0.01)
    app.test_client().delete("/api/tasks/a/tokens", headers={"Authorization": f"Bearer {TOKEN}"})
    assert "revoked" in client.emit("subscribe", {"task": "a"}, callback=True)["error"]
