"""Fault tests: Redis killed, restarted and frozen under a real worker and web server."""
