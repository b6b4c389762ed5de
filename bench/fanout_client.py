"""Many dashboard clients in one asyncio process, for the fan-out benchmark (``bench/fanout.py``).

    python -m bench.fanout_client --url http://127.0.0.1:PORT --clients 500 --token T [--deflate] [--probe N]

Each client speaks Engine.IO v4 / Socket.IO v5 over aiohttp's websocket client: it answers pings
("2" -> "3"), connects with ``40{"token": ...}`` and joins the dashboard room with
``420["subscribe",{"dashboard":true}]``. ``--deflate`` offers permessage-deflate, as browsers do.

Control on stdin, figures on stdout: the process prints ``ready {...}`` once every client has
connected (or failed to), measures between the ``go`` and ``stop`` lines, then prints one JSON
line and exits. Every client receives the same frame for a push, so a frame's progress messages
(the call times) are parsed once per process and each client keeps only its receipt time; the lag
histogram (1 ms bins) is built at the end, so the clients stay light while they measure.
``--probe N`` adds one connection that also joins the rooms of N running tasks and measures
their ``task`` pushes the same way: the pipeline's lag without the dashboard's coalescing.
"""

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from collections import Counter

import aiohttp

TASKS_PREFIX = '42["tasks",'
GRACE = 1.0  # after "stop": receipts of pushes already seen still count for this long
HANDSHAKES = 25  # connections in flight at once; more only queues in the server's accept backlog


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Push:
    """One ``tasks`` frame: the call times it carries and when each client received it."""

    __slots__ = ("calls", "receipts", "size")

    def __init__(self, calls: list[float], size: int) -> None:
        self.calls, self.receipts, self.size = calls, [], size


class Fleet:
    """The clients of this process and what they measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url = args.url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        self.pushes: dict[tuple, Push] = {}  # by a key of the frame, only those first seen in the window
        self.seen_calls: set[tuple[str, str]] = set()  # (task id, message): a call counts once
        self.measuring = self.stopped = False
        self.connected = self.failed = self.dropped = 0
        self.errors: Counter[str] = Counter()
        self.other_frames: Counter[str] = Counter()  # other pushes: event name -> characters
        self.loop_lags: list[float] = []
        self.probe_lags: Counter[int] = Counter()  # ms -> calls, from the task rooms

    async def client(self, session: aiohttp.ClientSession, gate: asyncio.Semaphore) -> None:
        try:
            async with gate:
                ws = await session.ws_connect(self.url, compress=15 if self.args.deflate else 0,
                                              max_msg_size=0, autoping=True,
                                              timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
                await self.handshake(ws)
        except Exception as exc:  # counted, not raised: a failed connection is a figure
            self.failed += 1
            self.errors[type(exc).__name__] += 1
            return
        self.connected += 1
        await self.listen(ws)

    async def handshake(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        opening = await asyncio.wait_for(ws.receive_str(), 30)
        if not opening.startswith("0"):
            raise ConnectionError(f"unexpected open packet {opening[:60]!r}")
        await ws.send_str("40" + json.dumps({"token": self.args.token}))
        await self.expect(ws, "40")
        await ws.send_str('420["subscribe",{"dashboard":true}]')
        await self.expect(ws, "430")

    async def expect(self, ws: aiohttp.ClientWebSocketResponse, prefix: str) -> None:
        while True:
            frame = await asyncio.wait_for(ws.receive_str(), 30)
            if frame == "2":
                await ws.send_str("3")
            elif frame.startswith(prefix):
                return
            elif frame.startswith("44"):
                raise ConnectionRefusedError(frame[:200])

    async def listen(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            now = time.time()
            frame = message.data
            if frame == "2":
                await ws.send_str("3")
            elif frame.startswith(TASKS_PREFIX):
                self.receive(frame, now)
            elif self.measuring and frame.startswith('42["'):
                self.other_frames[frame[4:frame.find('"', 4)]] += len(frame)
        if not self.stopped:
            self.dropped += 1
            self.errors[f"closed {ws.close_code}"] += 1

    async def probe(self, session: aiohttp.ClientSession) -> None:
        """One more connection, in the rooms of ``--probe`` tasks: their ``task`` pushes are not
        coalesced, so their lag is the pipeline's alone (worker, Redis, monitor), without the
        dashboard's coalescing and fan-out."""
        try:
            ws = await session.ws_connect(self.url, max_msg_size=0)
            await self.handshake(ws)
        except Exception as exc:
            self.errors[f"probe: {type(exc).__name__}"] += 1
            return
        watched: set[str] = set()
        seen: set[str] = set()
        async for message in ws:
            now, frame = time.time(), message.data
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            if frame == "2":
                await ws.send_str("3")
            elif frame.startswith(TASKS_PREFIX) and len(watched) < self.args.probe:
                for task in json.loads(frame[2:])[1]:
                    if task.get("status") == "running" and len(watched) < self.args.probe:
                        watched.add(task["id"])
                        await ws.send_str('42["subscribe",' + json.dumps({"task": task["id"]}) + "]")
            elif frame.startswith('42["task",') and self.measuring:
                task = json.loads(frame[2:])[1]
                message = (task.get("progress") or {}).get("message")
                if task.get("status") == "running" and message and message not in seen:
                    seen.add(message)
                    with contextlib.suppress(ValueError):
                        self.probe_lags[round((now - float(message)) * 1000)] += 1

    def receive(self, frame: str, now: float) -> None:
        # Not hash(frame): hashing every copy of a 50 KiB frame was a third of the clients' CPU.
        # Both ends hold a task's progress message or update time, which no two pushes share.
        key = (len(frame), frame[:256], frame[-128:])
        push = self.pushes.get(key)
        if push is None:
            if not self.measuring:
                return
            push = self.pushes[key] = Push(self.calls(frame), len(frame))
        push.receipts.append(now)

    def calls(self, frame: str) -> list[float]:
        """Wall times of the progress calls this push delivers first (each call counts once)."""
        out = []
        for task in json.loads(frame[2:])[1]:
            progress = task.get("progress") or {}
            message = progress.get("message")
            # A running task's message is its last call's time; a finished one keeps it, so skip that.
            if task.get("status") != "running" or not message or (task["id"], message) in self.seen_calls:
                continue
            self.seen_calls.add((task["id"], message))
            with contextlib.suppress(ValueError):
                out.append(float(message))
        return out

    async def watch_loop(self) -> None:
        """How late the event loop wakes up: if the clients' loop lags, so does every receipt."""
        while not self.stopped:
            began = time.monotonic()
            await asyncio.sleep(0.05)
            if self.measuring:
                self.loop_lags.append(time.monotonic() - began - 0.05)

    def histogram(self) -> Counter[int]:
        """Lag in ms (receipt minus call) of every (client, call) pair, in 1 ms bins."""
        lags: Counter[int] = Counter()
        for push in self.pushes.values():
            received = Counter(round(at * 1000) for at in push.receipts)
            calls = [round(at * 1000) for at in push.calls]
            for at, clients in received.items():
                for call in calls:
                    lags[at - call] += clients
        return lags


async def control(fleet: Fleet) -> dict:
    """Measure between the "go" and "stop" lines on stdin; the window's CPU and wall seconds."""
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                       sys.stdin)
    line = await reader.readline()
    if line.strip() != b"go":
        return {}
    cpu0, wall0 = cpu_now(), time.monotonic()
    fleet.measuring = True
    await reader.readline()  # "stop" (or EOF)
    fleet.measuring = False
    cpu1, wall1 = cpu_now(), time.monotonic()
    await asyncio.sleep(GRACE)
    fleet.stopped = True
    return {"cpu_seconds": cpu1 - cpu0, "wall_seconds": wall1 - wall0}


async def main(args: argparse.Namespace) -> None:
    fleet = Fleet(args)
    gate = asyncio.Semaphore(HANDSHAKES)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.monotonic()
        clients = [asyncio.create_task(fleet.client(session, gate)) for _ in range(args.clients)]
        watcher = asyncio.create_task(fleet.watch_loop())
        prober = asyncio.create_task(fleet.probe(session)) if args.probe else None
        while fleet.connected + fleet.failed < args.clients:
            await asyncio.sleep(0.05)
        print("ready " + json.dumps({"connected": fleet.connected, "failed": fleet.failed,
                                     "seconds": round(time.monotonic() - began, 3)}), flush=True)
        window = await control(fleet)
        fleet.stopped = True
        received = [len(p.receipts) for p in fleet.pushes.values()]
        lags = fleet.histogram()
        loop = sorted(fleet.loop_lags) or [float("nan")]
        print(json.dumps({
            **window, "clients": args.clients, "connected": fleet.connected, "failed": fleet.failed,
            "dropped": fleet.dropped, "errors": dict(fleet.errors), "pushes": len(received),
            "missed": sum(fleet.connected - n for n in received),
            "calls": sum(len(p.calls) for p in fleet.pushes.values()),
            "frame_chars": sum(p.size for p in fleet.pushes.values()),
            "other_chars": dict(fleet.other_frames), "lags_ms": {str(k): v for k, v in lags.items()},
            "probe_lags_ms": {str(k): v for k, v in fleet.probe_lags.items()},
            "loop_lag_p99_ms": round(loop[int(0.99 * (len(loop) - 1))] * 1000, 2),
        }), flush=True)
        helpers = [watcher, *([prober] if prober else [])]
        for task in clients + helpers:
            task.cancel()
        await asyncio.gather(*clients, *helpers, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--token", required=True)
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate, as browsers do")
    parser.add_argument("--probe", type=int, default=0, help="also watch this many task rooms")
    asyncio.run(main(parser.parse_args()))
