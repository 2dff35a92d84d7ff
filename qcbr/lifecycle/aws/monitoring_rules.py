"""Scheduled monitoring on AWS as the backend's monitoring scheduler: the endpoint stacks' rules.

Locally one scheduler process runs every due schedule. On AWS each endpoint stack
(infra/cloudformation/endpoint.yaml) brings its own EventBridge rule
``<project>-<stage>-monitoring`` that starts the monitoring job on the stack's
``MonitoringScheduleExpression``; so starting the scheduler enables the project's rules,
stopping it disables them (scheduled runs pause, on-demand runs still work), and its status is
their state. The interval is each stack's expression, not the local scheduler's wake-up time: a
stack update re-applies its ``MonitoringState`` and ``MonitoringScheduleExpression`` parameters.
"""
from __future__ import annotations

import re
from qcbr.errors import StateError
from qcbr.lifecycle.aws.clients import AwsClients, translate
from qcbr.lifecycle.base import STAGES

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_MINUTES = {"minute": 1, "hour": 60, "day": 1440}


def rate_minutes(expression: str | None) -> float | None:
    """``rate(1 hour)`` -> 60.0; None for a cron expression (no fixed interval)."""
    match = _RATE.match((expression or "").strip())
    if not match:
        return None
    return float(int(match.group(1)) * _MINUTES[match.group(2).rstrip("s")])


class MonitoringRules:
    def __init__(self, clients: AwsClients, project: str):
        self.clients = clients
        self.project = project
        self._name = re.compile(rf"^{re.escape(project)}-(?P<stage>{'|'.join(STAGES)})-monitoring$")

    def rules(self) -> list[dict]:
        """The project's monitoring rules: ``{Name, Arn, State, ScheduleExpression, Endpoint, Stage,
        EveryMinutes, LogGroup}``, by name."""
        events = self.clients.events
        found: list[dict] = []
        with translate(f"listing the EventBridge rules of project {self.project}"):
            paginator = events.get_paginator("list_rules")
            for page in paginator.paginate(NamePrefix=f"{self.project}-"):
                found += [r for r in page.get("Rules", []) if self._name.match(r["Name"])]
        out = []
        for rule in sorted(found, key=lambda r: r["Name"]):
            stage = self._name.match(rule["Name"]).group("stage")
            out.append({
                "Name": rule["Name"], "Arn": rule.get("Arn"), "State": rule.get("State"),
                "ScheduleExpression": rule.get("ScheduleExpression"), "Stage": stage,
                "Endpoint": f"{self.project}-{stage}", "EveryMinutes": rate_minutes(rule.get("ScheduleExpression")),
                "LogGroup": f"/aws/lambda/{rule['Name']}",
            })
        return out

    def status(self, rules: list[dict] | None = None) -> dict:
        """The protocol's ``{running, pid, started, every_minutes, log}`` (+ ``rules``): running when
        a rule is enabled; every_minutes the shortest interval among the enabled (else all) rules."""
        rules = self.rules() if rules is None else rules
        enabled = [r for r in rules if r["State"] == "ENABLED"]
        minutes = [r["EveryMinutes"] for r in (enabled or rules) if r["EveryMinutes"] is not None]
        return {"running": bool(enabled), "pid": None, "started": None,
                "every_minutes": min(minutes) if minutes else None,
                "log": ", ".join(r["LogGroup"] for r in rules) or None, "rules": rules}

    def set_enabled(self, enabled: bool) -> list[dict]:
        """Enable or disable every monitoring rule of the project; returns the rules as they are now.
        Enabling needs at least one rule; disabling none is nothing to do."""
        rules = self.rules()
        if not rules and enabled:
            raise StateError(
                f"project {self.project} has no monitoring rules ({self.project}-<stage>-monitoring): they come "
                "with the endpoint stacks the deploy pipeline creates (infra/cloudformation/endpoint.yaml); "
                "approve a version to deploy one, or run `qcbr monitor run --endpoint NAME` on demand"
            )
        events = self.clients.events
        for rule in rules:
            with translate(f"{'enabling' if enabled else 'disabling'} EventBridge rule {rule['Name']}"):
                (events.enable_rule if enabled else events.disable_rule)(Name=rule["Name"])
        return self.rules()
