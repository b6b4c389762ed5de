"""Pulse's web server: ingest (the event monitor), model, push (Socket.IO rooms), HTTP, upkeep.

``create_app(celery_app)`` builds the Flask app for the user's Celery app and binds the shared
objects; ``start_background`` starts the monitor, the registry upkeep, the dashboard pusher and
the token recheck (kept apart so that building an app starts nothing).
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from flask import Flask
from flask_socketio import SocketIO

from pulse.agent.install import install
from pulse.record.registry import retry_once
from pulse.server.alerts.outbox import Outbox
from pulse.server.alerts.readings import Readings
from pulse.server.alerts.rules import Rules
from pulse.server.http import alerts as alert_routes
from pulse.server.http import analytics as analytics_routes
from pulse.server.http import api, auth, commands, embed, middleware, pages, schedule, security
from pulse.server.http import bulk as bulk_routes
from pulse.server.http import export as export_routes
from pulse.server.http import logs as log_routes
from pulse.server.http import queues as queue_routes
from pulse.server.http import workers as worker_routes
from pulse.server.http.analytics_metrics import AnalyticsCollector
from pulse.server.http.health_metrics import HealthGauges
from pulse.server.http.metrics import Metrics
from pulse.server.http.sessions import Sessions
from pulse.server.http.throttle import AuthThrottle
from pulse.server.ingest.monitor import Monitor
from pulse.server.ingest.notices import Notices
from pulse.server.model.actions import Actions
from pulse.server.model.amqp_queues import amqp_depths
from pulse.server.model.analytics import Analytics
from pulse.server.model.audit import AuditLog
from pulse.server.model.bulk import Bulk
from pulse.server.model.groups import describe_unit
from pulse.server.model.listing import Listing
from pulse.server.model.results import use_lookup_only_backend
from pulse.server.model.store import TaskStore
from pulse.server.model.taskjson import RATE_WINDOW, public_view
from pulse.server.model.workers import worker_json
from pulse.server.push import live
from pulse.server.push.packets import SafePacket
from pulse.server.push.waiters import Waiters
from pulse.server.upkeep.alerting import Alerting
from pulse.server.upkeep.bulk_runner import BulkRunner
from pulse.server.upkeep.lapses import Lapses
from pulse.server.upkeep.maintenance import Maintenance
from pulse.server.upkeep.reindex import Reindex
from pulse.settings import load_config


def create_app(celery_app: Celery, env: Mapping[str, str] | None = None) -> Flask:
    """Build the server for ``celery_app`` (the user's, handed in), settings from ``env``
    (default: the process environment). Raises ConfigError when a setting is wrong or the
    registry has no Redis to live in."""
    env = os.environ if env is None else env
    templates, static = web_files()
    app = Flask(__name__, template_folder=str(templates), static_folder=str(static))
    app.config.update(load_config(env))
    config = app.config

    agent = install(celery_app, env=env)  # idempotent: the user's module has usually done it
    agent.registry_location()  # refuse to start, naming what to set, when no Redis can hold it
    use_lookup_only_backend(celery_app)
    registry = agent.registry
    socketio = SocketIO(app, async_mode=config["ASYNC_MODE"],
                        cors_allowed_origins=embed.socket_origins(config["EMBED_ORIGINS"]),
                        # Embedding pages connect with a per-task token, never with cookies.
                        cors_credentials=False,
                        max_http_buffer_size=config["MAX_SOCKET_MESSAGE"], serializer=SafePacket)
    metrics = Metrics()
    store = TaskStore(registry, celery_app)
    listing = Listing(registry)
    broadcaster = live.Broadcaster(
        socketio, config["PUSH_INTERVAL"], on_push=metrics.push, counts=listing.counts,
        workers=lambda hosts: [worker_json(monitor, store, listing, host) for host in hosts],
        unit=lambda unit_id, public: describe_unit(store, unit_id, public_view if public else lambda t: t))
    waiters = Waiters(socketio.server.eio.create_event)

    def task_changed(data: dict[str, Any]) -> None:
        broadcaster.task_changed(data)
        waiters.notify(data)

    notices = Notices(celery_app, registry.prefix)

    def changed_here(data: dict[str, Any]) -> None:
        # No Celery event carries this change (an action, lost, expired): the other servers'
        # clients hear of it through a notice.
        task_changed(data)
        notices.publish([data["id"]])

    def many_changed_here(task_ids: list[str]) -> None:
        # A bulk action's batch: one read and one notice message for all of it.
        for data in store.many_json(task_ids, points=lambda task_id: RATE_WINDOW):
            task_changed(data)
        notices.publish(task_ids)

    monitor = Monitor(celery_app, store, on_task=task_changed, on_status=broadcaster.monitor_status,
                      on_events=metrics.events_seen, on_worker=broadcaster.worker_changed,
                      idle_timeout=config["MONITOR_IDLE_TIMEOUT"],
                      spawn=socketio.start_background_task, pause=lambda: socketio.sleep(0),
                      # The whole progress history only for a task whose page is open; the
                      # rest (the dashboard, the widget) needs the points its rate is made of.
                      history_points=lambda task_id: None if broadcaster.watched(live.task_room(task_id))
                      else RATE_WINDOW, notice=notices.from_others, on_log=broadcaster.task_log)
    metrics.watch(lambda: {**listing.counts(), "connected": monitor.connected,
                           "newest_event_at": monitor.newest_event_at,
                           "workers_online": sum(1 for w in monitor.state.workers.values() if w.alive)})
    app.extensions.update(
        pulse_celery=celery_app,
        # /healthz pings the registry's Redis (its client retries a call on a connection that
        # Redis closed, once).
        pulse_redis=registry.client,
        # The overview's queue depths: read from the broker's lists when it is Redis; after a
        # Redis restart, a call on a pooled connection that Redis closed is tried once more.
        pulse_broker=broker_client(celery_app),
        # Otherwise (RabbitMQ) from a passive queue declare, one bounded connection per overview.
        pulse_queue_depths=lambda names: amqp_depths(celery_app, names),
        pulse_registry=registry,
        pulse_store=store,
        pulse_listing=listing,
        pulse_live=broadcaster,
        pulse_waiters=waiters,
        pulse_metrics=metrics,
        pulse_monitor=monitor,
        pulse_maintenance=Maintenance(store, monitor, on_task=changed_here, lost_after=config["LOST_AFTER"],
                                      interval=config["MAINTENANCE_INTERVAL"],
                                      prune_every=config["PRUNE_INTERVAL"],
                                      consumers_every=config["WORKER_CHECK_INTERVAL"]),
        # A per-task token that expires or is revoked, or a login session that ends, ends the live
        # feed of the sockets it opened.
        pulse_lapses=Lapses(registry, lambda sid: socketio.server.disconnect(sid, namespace="/"),
                            interval=config["TOKEN_RECHECK_INTERVAL"], on_lapse=metrics.lapsed.inc),
        pulse_audit=(audit := AuditLog(registry.client, registry.keys)),
        pulse_auth_throttle=AuthThrottle(registry.client, registry.keys, config["AUTH_ATTEMPTS"]),
        pulse_sessions=Sessions(registry.client, registry.keys, config["SESSION_LIFETIME"]),
        pulse_actions=(actions := Actions(store, celery_app, audit, on_change=changed_here)),
        pulse_bulk=(bulk := Bulk(registry, listing, actions, audit, config["BULK_CAP"],
                                 on_changed=many_changed_here)),
        pulse_bulk_runner=BulkRunner(bulk, notices.origin, pause=lambda: socketio.sleep(0)),
        pulse_reindex=Reindex(registry, notices.origin),
        pulse_analytics=(analytics := Analytics(registry)),
        pulse_alert_rules=(alert_rules := Rules(registry.client, registry.keys)),
        pulse_alert_outbox=(outbox := Outbox(registry)),
    )
    app.extensions["pulse_alerting"] = Alerting(
        registry, alert_rules, outbox, lambda now: readings(app, now), notices.origin,
        evaluate_every=config["ALERT_INTERVAL"], timeout=config["ALERT_TIMEOUT"],
        spawn=socketio.start_background_task)
    metrics.registry.register(AnalyticsCollector(analytics))  # read from Redis at each scrape
    api.init_app(app)  # first: it installs the path converter the other routes use
    auth.init_app(app)
    commands.init_app(app)
    export_routes.init_app(app)  # GET /api/tasks.csv and .ndjson
    log_routes.init_app(app)  # GET /api/tasks/<id>/logs: after api, whose path converter it uses
    queue_routes.init_app(app)  # the queues page's API: after api, whose path converter it uses
    embed.init_app(app)
    pages.init_app(app)
    schedule.init_app(app)  # the periodic tasks: after commands, which handles ActionError
    worker_routes.init_app(app)  # worker control: after commands, which handles ActionError
    bulk_routes.init_app(app)  # bulk actions and the failure inbox: after commands, likewise
    analytics_routes.init_app(app)  # GET /api/analytics
    alert_routes.init_app(app)  # alert rules: after commands and schedule, whose objects it uses
    live.init_app(app, socketio)
    metrics.registry.register(HealthGauges(lambda now: readings(app, now), celery_app.conf.task_default_queue,
                                           firing=alert_rules.firing))
    security.init_app(app)
    middleware.install(app)  # the WSGI stack around Socket.IO's middleware and Flask, in one list
    return app


def web_files() -> tuple[Path, Path]:
    """The templates and static folders: inside the installed package (a wheel carries them
    there), else at the top of the repository (a checkout)."""
    here = Path(__file__).resolve().parent
    if (here / "templates").is_dir():
        return here / "templates", here / "static"
    root = here.parent.parent
    return root / "templates", root / "static"


def readings(app: Flask, now: float) -> Readings:
    """The figures the alert rules (and the health gauges) read, from this server's objects."""
    extensions = app.extensions
    maintenance = extensions["pulse_maintenance"]
    analytics = extensions["pulse_analytics"]
    return Readings(now, extensions["pulse_registry"], extensions["pulse_monitor"],
                    consumers=lambda: maintenance.consumers, broker=extensions["pulse_broker"],
                    outcomes=lambda name, window, at: analytics.outcomes(
                        None if name is None else analytics.label(name), window, at),
                    schedule=extensions["pulse_schedule"].describe)


def broker_client(celery_app: Celery) -> redis.Redis | None:
    """A Redis client on the app's broker when it is Redis, else None."""
    url = str(celery_app.conf.broker_url or "")
    if url.split("://", 1)[0] not in ("redis", "rediss", "socket", "unix"):
        return None
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, retry=retry_once())


def start_background(app: Flask) -> None:
    """Start the monitor, the registry upkeep, the dashboard pusher, the token recheck, the bulk
    action runner, the indexing of records older than their indexes and the alerting."""
    socketio = app.extensions["socketio"]
    for name in ("pulse_monitor", "pulse_maintenance", "pulse_live", "pulse_lapses", "pulse_bulk_runner",
                 "pulse_reindex", "pulse_alerting"):
        worker = app.extensions[name]
        socketio.start_background_task(worker.run, sleep=socketio.sleep)
