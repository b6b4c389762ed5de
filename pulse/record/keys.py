"""Every Redis key name Pulse uses, under one prefix (``pulse:`` unless configured).

Families, as ``<prefix><name>``:

- ``t:<id>`` a task's record (a hash), ``h:<id>`` its progress history (a list), ``c:<id>`` its
  children (a set), ``l:<id>`` its newest log lines (a list) and ``lc:<id>`` their counters,
  ``s:<id>`` its search terms (a string, terms.py);
- ``i:<field>:<value>`` the tasks with that status, state, name, worker or queue (a sorted set),
  ``i:group:<id>`` a group's members, ``i:term:<term>`` the tasks with that search term
  (terms.py), ``i:all`` every task by first record, ``i:updated`` by last
  change, ``i:ended`` the ended ones by end time;
- ``names``, ``queues``, ``workers`` the task names, queues and workers ever recorded (sets);
  ``idchars`` the characters of every id ever recorded (a set);
- ``i:failgroup:<name>\x1f<exception type>`` the unresolved failures (failed or lost) of a task name
  and exception type (an index like the others); ``failgroups`` the groups that have any (a set);
- ``tp:<minute>`` finished and failed tasks in that minute (a hash);
- ``an:m:<minute>``, ``an:h:<hour>`` the analytics of the tasks that ended in that minute or hour
  (hashes: outcome counts and runtime and queue wait histograms per task name), ``an:total`` the
  same per name and queue since the start (for /metrics), ``an:names`` and ``an:queues`` the
  names and queues they count separately (sets, capped; record/analytics.py);
- ``chord:<group id>`` a chord's body, ``unitmax:<id>`` a unit's highest progress shown;
- ``goal:<goal>`` a goal's current task, ``goal-lock:<goal>`` the lock taken to launch it;
- ``tokrev:<scope>`` the token revocation cut-off of a task or group;
- ``auth-failures:<address>:<minute>`` failed credential checks of a client in that minute;
- ``acting:<id>`` the claim of an action on a task; ``bulk:<job>`` a bulk action and its parts
  ``bulk:<job>:ids|claimed|outcomes|lease``, ``bulk-jobs`` the bulk actions by time, ``bulk-open``
  those not ended;
- ``reindex:done|position|lease`` the indexing of records written before their indexes existed;
- ``alert-rules``, ``alert-states`` the alert rules and their states (hashes), ``alert-lease`` the
  server evaluating them, ``alert-outbox`` and ``alert-notice:<id>`` the notices to deliver,
  ``alert-history:<rule>`` a rule's notices and delivery attempts;
- ``session:<id>`` a login session (a string: its role and credential fingerprint);
- ``audit`` the audit log (a list), ``tmp:<name>`` a scratch key of a Lua script.

The Lua scripts build some of these from the prefix themselves, with the same spelling:
``lua/write.lua`` (``c:``, ``s:``, ``i:<field>:<value>``, ``i:group:``, ``i:term:``, ``i:failgroup:``,
``i:all``, ``i:updated``, ``i:ended``, ``names``, ``queues``, ``workers``, ``failgroups``,
``idchars``, ``tp:``, ``an:``) and ``lua/prune.lua`` (``t:``, ``h:``, ``c:``, ``l:``, ``lc:``, ``s:``,
``i:<field>:<value>``, ``i:term:``, ``i:failgroup:``, ``i:all``, ``i:ended``, ``i:updated``,
``failgroups``). Change a name there too, or old data is orphaned.
"""


class Keys:
    """The key names under one ``prefix``."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "pulse:") -> None:
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"Keys({self.prefix!r})"

    def task(self, task_id: str) -> str:
        """The hash holding a task's record."""
        return f"{self.prefix}t:{task_id}"

    def history(self, task_id: str) -> str:
        """The list of a task's progress points, newest first."""
        return f"{self.prefix}h:{task_id}"

    def terms(self, task_id: str) -> str:
        """A task's search terms, separated by the unit separator (terms.py)."""
        return f"{self.prefix}s:{task_id}"

    def logs(self, task_id: str) -> str:
        """The list of a task's newest log lines, each "<seq> <json>"."""
        return f"{self.prefix}l:{task_id}"

    def log_counts(self, task_id: str) -> str:
        """The hash of a task's log counters: ``seq`` (the last line's number), ``dropped`` (the
        oldest lines trimmed), ``lost`` (lines its worker could not send)."""
        return f"{self.prefix}lc:{task_id}"

    def children(self, task_id: str) -> str:
        """The set of the ids of a task's children."""
        return f"{self.prefix}c:{task_id}"

    def index(self, field: str, value: str) -> str:
        """The sorted set of the tasks whose ``field`` is ``value`` (``group`` for a group's members)."""
        return f"{self.prefix}i:{field}:{value}"

    @property
    def all(self) -> str:
        """The sorted set of every task, by the time it was first recorded."""
        return f"{self.prefix}i:all"

    @property
    def updated(self) -> str:
        """The sorted set of every task, by the time of its last change."""
        return f"{self.prefix}i:updated"

    @property
    def ended(self) -> str:
        """The sorted set of the ended tasks, by the time they ended."""
        return f"{self.prefix}i:ended"

    @property
    def names(self) -> str:
        """The set of the task names ever recorded."""
        return f"{self.prefix}names"

    @property
    def failure_groups(self) -> str:
        """The set of the failure inbox's groups (name and exception type) that have failures."""
        return f"{self.prefix}failgroups"

    @property
    def id_chars(self) -> str:
        """The set of the characters of every id ever recorded."""
        return f"{self.prefix}idchars"

    @property
    def queues(self) -> str:
        """The set of the queues ever recorded."""
        return f"{self.prefix}queues"

    def chord_body(self, group_id: str) -> str:
        """The id of the body of the chord whose header is group ``group_id``."""
        return f"{self.prefix}chord:{group_id}"

    def unit_max(self, unit_id: str) -> str:
        """The highest percent shown for a group, chord or chain (its high-water mark)."""
        return f"{self.prefix}unitmax:{unit_id}"

    def goal(self, goal: str) -> str:
        """The id of a goal's current task."""
        return f"{self.prefix}goal:{goal}"

    def goal_lock(self, goal: str) -> str:
        """The lock held while a goal's task is launched."""
        return f"{self.prefix}goal-lock:{goal}"

    def token_revocation(self, scope: str) -> str:
        """The time before which every token of a task or group (``scope``) is revoked."""
        return f"{self.prefix}tokrev:{scope}"

    def auth_failures(self, address: str, minute: int) -> str:
        """The count of failed credential checks from ``address`` in ``minute`` (Unix time // 60)."""
        return f"{self.prefix}auth-failures:{address}:{minute}"

    def acting(self, task_id: str) -> str:
        """The claim an action holds on a task while it acts (a replay sends before it records)."""
        return f"{self.prefix}acting:{task_id}"

    def bulk(self, job_id: str, part: str = "") -> str:
        """A bulk action's job (a hash), or one of its parts: ``ids`` (a list), ``claimed`` (a set),
        ``outcomes`` (a hash), ``lease`` (the server running it)."""
        return f"{self.prefix}bulk:{job_id}" + (f":{part}" if part else "")

    @property
    def bulk_jobs(self) -> str:
        """The sorted set of bulk actions by the time they were asked for."""
        return f"{self.prefix}bulk-jobs"

    @property
    def bulk_open(self) -> str:
        """The set of the bulk actions that have not ended (the runners look at these only)."""
        return f"{self.prefix}bulk-open"

    def reindex(self, part: str) -> str:
        """The indexing of records older than their indexes: ``done`` (the version it reached),
        ``position`` (where it stands), ``lease`` (the server on it)."""
        return f"{self.prefix}reindex:{part}"

    def session(self, session_id: str) -> str:
        """A login session: gone once it was ended (logout) or expired."""
        return f"{self.prefix}session:{session_id}"

    def throughput(self, minute: int) -> str:
        """The hash of finished and failed counts in ``minute`` (Unix time // 60)."""
        return f"{self.prefix}tp:{minute}"

    @property
    def alert_rules(self) -> str:
        """The hash of the alert rules: rule id -> its JSON."""
        return f"{self.prefix}alert-rules"

    @property
    def alert_states(self) -> str:
        """The hash of the alert rules' evaluation states: rule id -> its JSON."""
        return f"{self.prefix}alert-states"

    @property
    def alert_lease(self) -> str:
        """The server that evaluates the alert rules and delivers their notices."""
        return f"{self.prefix}alert-lease"

    @property
    def alert_outbox(self) -> str:
        """The sorted set of the notices to deliver, by the time of their next attempt."""
        return f"{self.prefix}alert-outbox"

    def alert_notice(self, notice_id: str) -> str:
        """A notice waiting to be delivered (a hash: its target, body and attempts)."""
        return f"{self.prefix}alert-notice:{notice_id}"

    def alert_history(self, rule_id: str) -> str:
        """The list of a rule's state changes and delivery attempts, newest first."""
        return f"{self.prefix}alert-history:{rule_id}"

    def analytics_minute(self, minute: int) -> str:
        """The hash of the analytics of the tasks that ended in ``minute`` (Unix time // 60)."""
        return f"{self.prefix}an:m:{minute}"

    def analytics_hour(self, hour: int) -> str:
        """The hash of the analytics of the tasks that ended in ``hour`` (Unix time // 3600)."""
        return f"{self.prefix}an:h:{hour}"

    @property
    def analytics_totals(self) -> str:
        """The hash of the analytics of every task that ended, per name and queue (never expires)."""
        return f"{self.prefix}an:total"

    @property
    def analytics_names(self) -> str:
        """The set of the task names the analytics count separately (the rest count as "other")."""
        return f"{self.prefix}an:names"

    @property
    def analytics_queues(self) -> str:
        """The set of the queues the analytics count separately (the rest count as "other")."""
        return f"{self.prefix}an:queues"

    @property
    def audit(self) -> str:
        """The list of operator actions, newest first."""
        return f"{self.prefix}audit"

    def temporary(self, name: str) -> str:
        """A scratch key a script uses and deletes; ``name`` must be unique to the call."""
        return f"{self.prefix}tmp:{name}"
