"""A user's Celery project that is not Pulse's: the foreign-project test installs Pulse from the
repository with pip into a fresh virtualenv and runs this package with it (never the working tree)."""

from .celery import app

__all__ = ["app"]
