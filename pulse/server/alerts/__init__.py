"""Alerts: rules an operator keeps in Redis (``rules.py``), what their conditions read from the
running system (``readings.py``), each condition's judgement (``conditions.py``), the notices waiting
to be delivered and their history (``outbox.py``) and the webhook bodies and call (``webhooks.py``).

One server at a time, under a lease, evaluates the rules and delivers the notices
(``upkeep/alerting.py``), so a notice goes out once however many servers run.
"""
