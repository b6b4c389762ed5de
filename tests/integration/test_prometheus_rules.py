"""For Prometheus users: the alerting rules (monitoring/prometheus/) pass promtool's check and their
unit tests, in which every rule fires and resolves; the Grafana dashboard (monitoring/grafana/) is a
dashboard whose every panel queries valid PromQL; and every metric either of them names is one a
real Pulse server exports at /metrics. promtool comes from Debian's prometheus package (`make test`
installs it when root); without it these tests are skipped, and under CI=true they fail."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import ROOT, unavailable, wait_until

pytestmark = pytest.mark.integration

RULES_DIR = ROOT / "monitoring" / "prometheus"
RULES, RULE_TESTS = RULES_DIR / "pulse-rules.yml", RULES_DIR / "pulse-rules.test.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "pulse-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
METRIC = re.compile(r"\bpulse_[a-z0-9_]+\b")
@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("the Prometheus rule tests need promtool (apt-get install prometheus; `make test` "
                    "installs it when root)")
    return path


def run(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[str]:
    """Every PromQL the dashboard sends: its panels' targets and its variables' label_values queries."""
    board = dashboard()
    queries = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    return queries + [var["definition"] for var in board["templating"]["list"] if var["type"] == "query"]


def test_the_rules_pass_promtool_check(promtool):
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_every_rule_fires_and_resolves_in_its_unit_tests(promtool):
    tested = run(promtool, "test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    fired, resolved = set(), set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else resolved).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert fired == alerts and resolved == alerts  # every rule both fires and resolves somewhere


def test_the_dashboard_is_a_grafana_dashboard_with_a_query_in_every_panel():
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] and board["title"] and board["panels"]
    variables = {var["name"]: var for var in board["templating"]["list"]}
    source = variables["DS_PROMETHEUS"]  # a templated data source: loads by import and by provisioning
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    assert [panel["id"] for panel in board["panels"]] == list(range(1, len(board["panels"]) + 1))
    cells = set()
    for panel in board["panels"]:
        assert panel["type"] in {"stat", "timeseries", "heatmap"} and panel["title"], panel
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == DATASOURCE, panel["title"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                   for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
    for name in ("name", "queue"):
        assert variables[name]["datasource"] == DATASOURCE and variables[name]["includeAll"]


def test_every_dashboard_query_is_valid_promql(promtool, tmp_path):
    # promtool parses the expressions of recording rules: one rule per panel query, with Grafana's
    # variables replaced by what Grafana would send.
    grafana = {"$__rate_interval": "5m", "$name": ".*", "$queue": ".*"}
    records = []
    for index, expr in enumerate(dashboard_queries()):
        if expr.startswith("label_values("):  # a Grafana function, not PromQL: its metric is what counts
            expr = re.fullmatch(r"label_values\((pulse_[a-z_]+), *[a-z_]+\)", expr).group(1)
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        records.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    checked = run(promtool, "check", "rules", str(path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_metric_the_rules_and_the_dashboard_name_is_exported(stack):
    named = {name for text in [rule["expr"] for rule in rules()] + dashboard_queries()
             for name in METRIC.findall(text)}
    # A success and a failure, so that the labelled series (by name, queue, status) exist.
    finished = stack.launch("tasks.demo.count", total=1, delay=0.01)
    failed = stack.launch("tasks.demo.fail_with_details", step=1, delay=0.01)
    stack.wait_for(finished, "finished")
    stack.wait_for(failed, "failed")

    def exported() -> set[str]:
        response = stack.api("GET", "/metrics")
        assert response.status_code == 200, response.text
        return {sample.name for family in text_string_to_metric_families(response.text)
                for sample in family.samples}

    assert {"pulse_task_outcomes_total", "pulse_task_runtime_seconds_bucket",
            "pulse_task_queue_wait_seconds_sum"} <= exported()
    # The queues' consumers are known once the workers have answered (PULSE_WORKER_CHECK_INTERVAL).
    wait_until(lambda: named <= exported(), 30, 0.5, "every metric named to be exported")
