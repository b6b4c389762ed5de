"""Socket.IO handlers in-process: auth on connect, subscribe acknowledgements, rooms, coalescing."""

import pytest

from ..conftest import TOKEN, log_in


def record(app, task_id):
    app.extensions["pulse_registry"].write(task_id, "scheduled", fields={"name": "tasks.demo.count"})


def changed(app, task_id):
    """A task changes as the monitor would report it: recorded, then handed to the live push."""
    record(app, task_id)
    app.extensions["pulse_live"].task_changed(app.extensions["pulse_store"].get_json(task_id))


@pytest.fixture
def socketio(app):
    app.extensions["pulse_monitor"].connected = True  # as if the event stream were up
    return app.extensions["socketio"]


def connect(app, socketio, **kwargs):
    return socketio.test_client(app, **kwargs)


def test_connection_without_a_token_is_refused(app, socketio):
    assert not connect(app, socketio).is_connected()
    assert not connect(app, socketio, auth={"token": "forged-token-0123456789"}).is_connected()
    assert not connect(app, socketio, auth={"token": None}).is_connected()


def test_connection_with_a_token_or_a_session(app, socketio):
    assert connect(app, socketio, auth={"token": TOKEN}).is_connected()
    client = app.test_client()
    log_in(client, TOKEN)
    own = {"Origin": "http://localhost"}  # the test client's host
    assert connect(app, socketio, flask_test_client=client, headers=own).is_connected()
    # The same cookie on a handshake without an Origin (a <script> tag's) or from elsewhere: refused.
    assert not connect(app, socketio, flask_test_client=client).is_connected()
    assert not connect(app, socketio, flask_test_client=client,
                       headers={"Origin": "http://app.localhost"}).is_connected()


@pytest.mark.parametrize("payload", [None, "task", ["x"], {"task": "bad id!"}, {"task": 5}, {}])
def test_malformed_subscribe_gets_an_error_ack(app, socketio, payload):
    client = connect(app, socketio, auth={"token": TOKEN})
    ack = client.emit("subscribe", payload, callback=True)
    assert "error" in ack
    assert client.get_received() == []


def test_subscribe_to_a_task_acks_its_snapshot(app, socketio):
    record(app, "snap-1")
    client = connect(app, socketio, auth={"token": TOKEN})
    ack = client.emit("subscribe", {"task": "snap-1"}, callback=True)
    assert ack["task"]["status"] == "scheduled"
    ack = client.emit("subscribe", {"task": "not-seen-yet"}, callback=True)
    assert ack["task"]["status"] == "unknown"


def test_task_pushes_go_only_to_the_task_room(app, socketio):
    watcher = connect(app, socketio, auth={"token": TOKEN})
    bystander = connect(app, socketio, auth={"token": TOKEN})
    watcher.emit("subscribe", {"task": "room-a"}, callback=True)
    bystander.emit("subscribe", {"task": "room-b"}, callback=True)
    changed(app, "room-a")
    received = watcher.get_received()
    assert [(m["name"], m["args"][0]["id"]) for m in received] == [("task", "room-a")]
    assert bystander.get_received() == []


def test_dashboard_gets_a_snapshot_then_coalesced_batches(app, socketio):
    broadcaster = app.extensions["pulse_live"]
    changed(app, "dash-0")
    dashboard = connect(app, socketio, auth={"token": TOKEN})
    ack = dashboard.emit("subscribe", {"dashboard": True}, callback=True)
    assert [t["id"] for t in ack["tasks"]] == ["dash-0"]
    for number in range(50):
        changed(app, f"dash-{number % 5}")
    assert dashboard.get_received() == []  # nothing goes out until the next flush
    assert broadcaster.flush() == 5
    received = dashboard.get_received()
    assert [m["name"] for m in received] == ["tasks", "counts"]
    assert sorted(t["id"] for t in received[0]["args"][0]) == [f"dash-{n}" for n in range(5)]
    assert received[1]["args"][0]["by_status"]["scheduled"] == 5
    assert broadcaster.flush() == 0
    assert dashboard.get_received() == []


def test_counts_and_workers_go_out_at_most_once_a_second(app, socketio):
    broadcaster = app.extensions["pulse_live"]
    dashboard = connect(app, socketio, auth={"token": TOKEN})
    dashboard.emit("subscribe", {"dashboard": True}, callback=True)
    app.extensions["pulse_monitor"].handle({"type": "worker-heartbeat", "hostname": "w9@h", "freq": 2.0,
                                            "timestamp": 1.0, "local_received": 1.0})
    changed(app, "c-1")
    broadcaster.flush(now=100.0)
    names = [m["name"] for m in dashboard.get_received()]
    assert names == ["tasks", "counts", "workers"]
    changed(app, "c-2")
    broadcaster.flush(now=100.5)  # tasks at once; counts wait for the next second
    assert [m["name"] for m in dashboard.get_received()] == ["tasks"]
    broadcaster.flush(now=101.1)
    received = dashboard.get_received()
    assert [m["name"] for m in received] == ["counts"]
    assert received[0]["args"][0]["total"] == 2


def test_unsubscribe_leaves_the_room(app, socketio):
    client = connect(app, socketio, auth={"token": TOKEN})
    client.emit("subscribe", {"task": "leave-1"}, callback=True)
    assert client.emit("unsubscribe", {"task": "leave-1"}, callback=True)["ok"] is True
    changed(app, "leave-1")
    assert client.get_received() == []
    assert "error" in client.emit("unsubscribe", "nonsense", callback=True)


def test_the_dashboard_room_gets_no_progress_history(app, socketio):
    registry = app.extensions["pulse_registry"]
    registry.write("h-1", "running", fields={"progress": {"current": 1}}, point=(1.0, 1))
    dashboard = connect(app, socketio, auth={"token": TOKEN})
    watcher = connect(app, socketio, auth={"token": TOKEN})
    snapshot = dashboard.emit("subscribe", {"dashboard": True}, callback=True)["tasks"]
    assert snapshot and all("history" not in t for t in snapshot)
    assert watcher.emit("subscribe", {"task": "h-1"}, callback=True)["task"]["history"] == [[1.0, 1.0]]
    app.extensions["pulse_live"].task_changed(app.extensions["pulse_store"].get_json("h-1"))
    app.extensions["pulse_live"].flush()
    batch = next(m for m in dashboard.get_received() if m["name"] == "tasks")["args"][0]
    assert "history" not in batch[0]
    assert watcher.get_received()[0]["args"][0]["history"] == [[1.0, 1.0]]


def test_nothing_is_built_for_rooms_nobody_watches(app, socketio, monkeypatch):
    emitted = []
    real_emit = socketio.emit
    monkeypatch.setattr(socketio, "emit", lambda event, data, to=None: (emitted.append((event, to)),
                                                                         real_emit(event, data, to=to)))
    counted = []
    live = app.extensions["pulse_live"]
    monkeypatch.setattr(live, "counts", lambda: counted.append(1) or {})
    changed(app, "alone-1")
    assert live.flush(now=10_000.0) == 0  # no dashboard open: no batch, no counts read
    assert emitted == [] and counted == []
    watcher = connect(app, socketio, auth={"token": TOKEN})
    watcher.emit("subscribe", {"task": "alone-1"}, callback=True)
    changed(app, "alone-1")
    assert emitted == [("task", "task:alone-1")]  # its own room only, not the empty public ones


def test_the_workers_push_carries_summaries_not_histories(app, socketio):
    from pulse.server.push.live import lean_worker

    worker = {"hostname": "w@h", "active_tasks": [{"id": "a", "history": [[1, 2]], "status": "running"}]}
    lean = lean_worker(worker)
    assert "history" not in lean["active_tasks"][0] and lean["active_tasks"][0]["status"] == "running"


def test_websocket_compression_is_declined():
    from pulse.server.push.live import without_compression

    seen = []
    wrapped = without_compression(lambda environ, start_response: seen.append(dict(environ)) or [b""])
    wrapped({"PATH_INFO": "/socket.io/", "HTTP_SEC_WEBSOCKET_EXTENSIONS": "permessage-deflate"}, None)
    assert seen == [{"PATH_INFO": "/socket.io/"}]  # the offer never reaches the websocket server


def send_raw(socketio, client, encoded):
    """A Socket.IO packet as it comes off the wire; returns the acknowledgement's arguments, if any."""
    client.acks = None
    socketio.server._handle_eio_message(client.eio_sid, encoded)
    return client.acks["args"] if client.acks else None


@pytest.mark.parametrize("encoded, error", [
    ("21[", "not a Socket.IO packet"),
    ("21[]", "an event is"),
    ("21[7]", "an event is"),
    ('21["disconnect"]', "reserved"),
    ('21["subscribe",{"dashboard":true},"extra"]', "takes one argument"),
    ('21["no-such-event",1]', "unknown event 'no-such-event'"),
    ('51-1["subscribe",{"_placeholder":true,"num":0}]', "binary payloads are not accepted"),
])
def test_malformed_and_unexpected_messages_get_an_error_ack_and_nothing_else(app, socketio, caplog, encoded,
                                                                            error):
    client = connect(app, socketio, auth={"token": TOKEN})
    clients = app.extensions["pulse_metrics"].registry.get_sample_value("pulse_connected_clients")
    [ack] = send_raw(socketio, client, encoded)
    assert error in ack["error"]
    assert client.get_received() == [] and client.is_connected()
    assert app.extensions["pulse_metrics"].registry.get_sample_value("pulse_connected_clients") == clients
    assert "tasks" in client.emit("subscribe", {"dashboard": True}, callback=True)  # still works
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("encoded", ["42[", "4{", "9", "", '42["nope"]', '42["disconnect"]', "44{}"])
def test_malformed_messages_without_an_ack_id_get_no_answer(app, socketio, caplog, encoded):
    client = connect(app, socketio, auth={"token": TOKEN})
    assert send_raw(socketio, client, encoded[1:]) is None  # less the Engine.IO type
    assert client.get_received() == [] and client.is_connected()
    assert not [r for r in caplog.records if r.exc_info]


def test_with_redis_unreachable_subscribe_gets_an_error_and_tokens_are_refused(caplog):
    from pulse.agent.tokens import mint_token
    from pulse.devstack import free_port
    from tests.conftest import demo_server

    app = demo_server({"PULSE_TOKEN": TOKEN, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/1",
                      "PULSE_ASYNC_MODE": "threading"})
    socketio = app.extensions["socketio"]
    # Credentials cannot be checked (nor their failures counted) without Redis: refused, no traceback.
    assert not connect(app, socketio, auth={"token": TOKEN}).is_connected()
    app.extensions["pulse_auth_throttle"].check = lambda address, failed: None  # to reach subscribe
    client = connect(app, socketio, auth={"token": TOKEN})
    for subscription in ({"task": "t-1"}, {"dashboard": True}):
        ack = client.emit("subscribe", subscription, callback=True)
        assert ack == {"error": "the server could not handle subscribe (ConnectionError); try again"}
    assert "Redis is unreachable" in caplog.text
    # A per-task token is checked against its revocations in Redis: unchecked, it is refused.
    token = mint_token(app.config["GRANT_KEY"], task_id="t-1")[0]
    assert not connect(app, socketio, auth={"token": token}).is_connected()
    assert not [r for r in caplog.records if r.exc_info]


def test_every_client_hears_of_an_outage_and_a_page_opened_during_one_at_once(app, socketio):
    task_page = connect(app, socketio, auth={"token": TOKEN})
    task_page.emit("subscribe", {"task": "t-outage"}, callback=True)
    app.extensions["pulse_live"].monitor_status(False)  # not only the dashboard room
    assert [(p["name"], p["args"][0]["connected"]) for p in task_page.get_received()] == [("monitor", False)]
    app.extensions["pulse_monitor"].connected = False
    late = connect(app, socketio, auth={"token": TOKEN})
    assert [(p["name"], p["args"][0]["connected"]) for p in late.get_received()] == [("monitor", False)]
