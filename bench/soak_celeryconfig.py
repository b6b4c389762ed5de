"""Celery settings for the soak's processes, loaded through ``CELERY_CONFIG_MODULE``.

Celery keeps a task's result for a day by default, so an hour of tasks would grow Redis however
tightly Pulse's registry is bounded. The soak (``bench/soak.py``) sets how long a result is kept
(``PULSE_SOAK_RESULT_EXPIRES`` seconds) so that Redis holds a bounded number of tasks.
"""

import os

result_expires = int(os.environ.get("PULSE_SOAK_RESULT_EXPIRES") or 86400)
