"""Ingest: Celery's event stream, the monitor that applies it, other servers' notices."""
