"""A bare Flask-SocketIO server on eventlet, no Pulse code: the machine's raw emit rate.

    python bench/bare_socketio.py PORT

A client joins the rooms it names in its connect auth payload (``{"rooms": ["all"]}``).
``GET /blast?room=all&n=1000&size=600`` starts a background task that emits ``n`` ``task``
events of about ``size`` bytes of JSON to the room, one emit at a time as a server pushing
changes would, yielding to the writers between emits.
"""

import eventlet

eventlet.monkey_patch()

import json  # noqa: E402
import sys  # noqa: E402

from flask import Flask, request  # noqa: E402
from flask_socketio import SocketIO, join_room  # noqa: E402

app = Flask(__name__)
socketio = SocketIO(app, async_mode="eventlet")


@socketio.on("connect")
def connect(auth=None):
    for room in (auth or {}).get("rooms", []):
        join_room(room)


def payload(size: int) -> dict:
    """A task-like document of about ``size`` bytes of JSON."""
    data = {"id": "0" * 36, "name": "bench.report", "state": "PROGRESS", "status": "running",
            "worker": "worker@bench", "progress": {"current": 5, "total": 10, "percent": 50.0,
                                                    "message": "1700000000.123456"}, "seq": 0, "pad": ""}
    data["pad"] = "x" * max(0, size - len(json.dumps(data)))
    return data


def blast(room: str, count: int, size: int) -> None:
    data = payload(size)
    for number in range(count):
        data["seq"] = number
        socketio.emit("task", data, to=room)
        socketio.sleep(0)


@app.get("/blast")
def start_blast():
    args = request.args
    socketio.start_background_task(blast, args.get("room", "all"), int(args.get("n", "1000")),
                                   int(args.get("size", "600")))
    return {"started": True}, 202


if __name__ == "__main__":
    socketio.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_output=False)
