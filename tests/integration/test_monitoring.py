"""The alert rules and the Grafana dashboard in monitoring/: Prometheus' promtool checks the rules and runs their
unit tests, checks every panel's expression (its variables replaced) as a recording rule, and a running mirror
exports every metric they name."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from devtools import seed
from devtools.ports import free_port
from devtools.skopeo import pull

from .conftest import credentials_of, small_image, wait_for

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
# what Grafana substitutes before a query reaches Prometheus
VARIABLES = {"$dc": ".*", "$__rate_interval": "5m"}
METRIC = re.compile(r"\bmirror_[a-z0-9_]+\b")

if not shutil.which("promtool"):
    pytest.skip("the monitoring tests need promtool (Debian's prometheus); ./run.sh test installs it",
                allow_module_level=True)


def promtool(*args: str) -> str:
    result = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def panel_expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    expressions = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            expressions.append(expr)
    return expressions


def alert_expressions() -> list[str]:
    return [rule["expr"] for group in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
            for rule in group["rules"]]


def test_the_alert_rules_pass_promtools_check_and_their_unit_tests():
    assert "SUCCESS" in promtool("check", "rules", str(MONITORING / "alerts.yml"))
    assert "SUCCESS" in promtool("test", "rules", str(MONITORING / "alerts-test.yml"))


def test_the_compose_profiles_prometheus_configuration_scrapes_the_mirror_with_the_rules():
    assert "SUCCESS" in promtool("check", "config", str(MONITORING / "prometheus.yml"))
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    assert config["scrape_configs"][0]["job_name"] == "artifactory-mirror"  # the job ArtifactoryMirrorDown names


def test_every_panel_expression_is_valid_promql(tmp_path):
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 30
    assert "dc" in {variable["name"] for variable in dashboard["templating"]["list"]}
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"panel:{n}", "expr": expr}
                                                        for n, expr in enumerate(panel_expressions())]}]}
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    assert "SUCCESS" in promtool("check", "rules", str(tmp_path / "panels.yml"))


def test_a_running_mirror_exports_every_metric_the_dashboard_and_the_rules_name(upstream_factory, mirror_factory,
                                                                              layer_cache, tmp_path):
    upstream = upstream_factory(users={"dev": ("dev-Pa55word", ("team",))})
    image = small_image(layer_cache)
    seed.push(upstream.registry_url, image)
    port = free_port()
    mirror = mirror_factory(credentials_of(upstream), dump=False, mirror_keys={"max_bytes": "1GiB"},
                            access={"users": "artifactory", "listen": f"127.0.0.1:{port}",
                                    "url": f"https://127.0.0.1:{port}"},
                            metrics={"listen": f"127.0.0.1:{free_port()}"})
    pull(f"{mirror.address}/{image.name}:{image.tag}", tmp_path / "out", cert_dir=mirror.trust,
         creds="dev:dev-Pa55word")
    named = {name for expr in (*panel_expressions(), *alert_expressions()) for name in METRIC.findall(expr)}

    def exported() -> set[str]:
        with urllib.request.urlopen(f"http://{mirror.cfg.metrics.listen}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    # the log files' counts arrive from the supervisor every few seconds
    wait_for(lambda: named <= exported(), f"the mirror to export {sorted(named - exported())}")
