"""The alert rules and the Grafana dashboard: their PromQL parses (promql-parser, a real parser)
and names only metrics, labels and label values the service exports; the Prometheus scrape
configuration matches the compose stack and the Kubernetes manifests; README documents every
metric and alert.

`unknown_metrics(queries, exported)` takes the set of exported series names, so the same
check runs against the registry here and against a scrape of a running API or worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from service import metrics
from service.jobs import JobStatus

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
ALERTS_TEST = ROOT / "deploy/prometheus/alerts_test.yml"
PROMETHEUS_COMPOSE = ROOT / "deploy/prometheus/prometheus.yml"
PROMETHEUS_K8S = ROOT / "deploy/prometheus/prometheus-kubernetes.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/exporter.json"
DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "deploy/grafana/provisioning/dashboards/exporter.yml"
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy/k8s"

# Series Prometheus itself adds to every scrape target.
PROMETHEUS_SERIES = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    }
)
# Labels the scrape adds (target labels of both scrape configurations).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})
# Grafana's built-in interval variables, replaced by a duration before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
# Sample names each metric type exposes (text format), for families the registry lists
# without samples (labelled metrics nobody has used yet).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
# Label values the service sets from closed sets (service/monitor.py samples these queues).
KNOWN_VALUES = {
    "status": frozenset(s.value for s in JobStatus),
    "queue": frozenset({"requests", "dead"}),
}
# Metrics whose `status` label is an HTTP status code, not a job status.
HTTP_STATUS_METRICS = frozenset({"exporter_http_requests_total"})
REQUIRED_ALERTS = {
    "DLQ not empty": "ExporterDeadLettersWaiting",
    "queue depth growing for 10 minutes": "ExporterQueueGrowing",
    "failure ratio above 5%": "ExporterFailureRatioHigh",
    "no worker up": "ExporterNoWorkerUp",
    "outbox lag above 60 s": "ExporterOutboxLagHigh",
    "p95 job duration above its target": "ExporterJobDurationHigh",
}


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    # Labels the text around the query uses ({{status}} in a legend, $labels.x in an annotation).
    uses_labels: frozenset[str] = frozenset()


# ---------------------------------------------------------------- what the service exports


def registry_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Every series name the registry exposes, including those of families without samples."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def exposition_names(text: str) -> set[str]:
    """Every series name in a /metrics text (a scrape shows only metrics with samples)."""
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def service_metrics() -> list[MetricWrapperBase]:
    return [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]


def series_labels() -> dict[str, frozenset[str]]:
    """Label names of every series of service/metrics.py (histogram buckets add `le`)."""
    found: dict[str, frozenset[str]] = {}
    for metric in service_metrics():
        # prometheus_client keeps label names only on the private attribute.
        labels = frozenset(getattr(metric, "_labelnames"))  # noqa: B009
        family = next(iter(metric.describe()))
        for suffix in SUFFIXES[family.type]:
            found[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return found


# ------------------------------------------------------------------------ the PromQL texts


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def template_labels(text: str) -> set[str]:
    return set(re.findall(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", text))


def alert_queries() -> list[Query]:
    return [
        Query(
            f"alerts.yml {rule['alert']}",
            rule["expr"],
            frozenset(template_labels(" ".join(rule.get("annotations", {}).values()))),
        )
        for rule in alert_rules()
    ]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return panels


def dashboard_queries() -> list[Query]:
    return [
        Query(
            f"dashboard {panel['title']!r} {target['refId']}",
            target["expr"],
            frozenset(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", target.get("legendFormat", ""))),
        )
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


def all_queries() -> list[Query]:
    return alert_queries() + dashboard_queries()


# ------------------------------------------------------------------------------ the checks


def parse(expr: str) -> promql_parser.Expr:
    """Parse with Grafana's interval variables replaced; any other `$` is an error."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise ValueError(f"unknown variable in {expr!r}")
    return promql_parser.parse(expr)


def nodes(expr: promql_parser.Expr) -> list[promql_parser.Expr]:
    found: list[promql_parser.Expr] = []

    def visit(node: promql_parser.Expr) -> bool:
        found.append(node)
        return True

    promql_parser.walk(expr, visit)
    return found


def selector_name(selector: promql_parser.VectorSelector) -> str | None:
    if selector.name:
        return selector.name
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return matcher.value
    return None


def selectors(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    return [node for node in nodes(expr) if isinstance(node, promql_parser.VectorSelector)]


def referenced_metrics(expr: promql_parser.Expr) -> set[str]:
    return {name for s in selectors(expr) if (name := selector_name(s))}


def unknown_metrics(queries: Iterable[Query], exported: set[str]) -> list[str]:
    """Problems: a query that does not parse, a selector without a fixed metric name, or a
    metric that is neither in `exported` nor a series Prometheus adds."""
    problems = []
    for query in queries:
        try:
            expr = parse(query.expr)
        except ValueError as exc:
            problems.append(f"{query.where}: does not parse: {exc}")
            continue
        for selector in selectors(expr):
            name = selector_name(selector)
            if name is None:
                problems.append(f"{query.where}: a selector without a metric name: {selector}")
            elif name not in exported and name not in PROMETHEUS_SERIES:
                problems.append(f"{query.where}: {name} is not exported")
    return problems


def label_problems(queries: Iterable[Query], labels: dict[str, frozenset[str]], jobs: set[str]) -> list[str]:
    """Label names each selector, `by`/`without` clause and legend uses must exist on the
    metrics involved; closed-set label values (status, queue, job) must be known values."""
    problems = []
    for query in queries:
        expr = parse(query.expr)
        for node in nodes(expr):
            if isinstance(node, promql_parser.VectorSelector):
                name = selector_name(node)
                own = labels.get(name or "", frozenset()) | TARGET_LABELS
                for matcher in node.matchers.matchers:
                    if matcher.name == "__name__":
                        continue
                    if name in labels and matcher.name not in own:
                        problems.append(f"{query.where}: {name} has no label {matcher.name!r}")
                    problems += value_problems(query.where, name or "", matcher, jobs)
        for node in nodes(expr):
            if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
                below = set(TARGET_LABELS)
                for selector in selectors(node.expr):
                    below |= labels.get(selector_name(selector) or "", frozenset())
                for label in node.modifier.labels:
                    if label not in below:
                        problems.append(f"{query.where}: aggregates by {label!r}, which no metric in it has")
        for label in query.uses_labels - output_labels(expr, labels):
            problems.append(f"{query.where}: the text uses label {label!r}, which the result does not have")
    return problems


def output_labels(node: promql_parser.Expr, labels: dict[str, frozenset[str]]) -> set[str]:
    """The label names of a query's result, for the legend and annotation templates."""
    if isinstance(node, promql_parser.VectorSelector):
        return set(labels.get(selector_name(node) or "", frozenset()) | TARGET_LABELS)
    if isinstance(node, promql_parser.MatrixSelector):
        return output_labels(node.vector_selector, labels)
    if isinstance(node, promql_parser.ParenExpr | promql_parser.SubqueryExpr | promql_parser.UnaryExpr):
        return output_labels(node.expr, labels)
    if isinstance(node, promql_parser.AggregateExpr):
        inner = output_labels(node.expr, labels)
        if str(node.op) in ("topk", "bottomk", "limitk"):
            return inner
        if node.modifier is None:
            return set()
        if node.modifier.type == promql_parser.AggModifierType.By:
            return set(node.modifier.labels)
        return inner - set(node.modifier.labels)
    if isinstance(node, promql_parser.Call):
        name = node.func.name
        if name == "absent":
            (selector,) = node.args
            assert isinstance(selector, promql_parser.VectorSelector | promql_parser.BinaryExpr)
            found = selectors(selector)
            return {m.name for s in found for m in s.matchers.matchers if m.op == promql_parser.MatchOp.Equal}
        vectors = [
            a
            for a in node.args
            if not isinstance(a, promql_parser.NumberLiteral | promql_parser.StringLiteral)
        ]
        result = output_labels(vectors[0], labels) if vectors else set()
        return result - {"le"} if name == "histogram_quantile" else result
    if isinstance(node, promql_parser.BinaryExpr):
        lhs, rhs = output_labels(node.lhs, labels), output_labels(node.rhs, labels)
        if isinstance(node.lhs, promql_parser.NumberLiteral):
            return rhs
        if str(node.op) == "or":
            return lhs | rhs
        return lhs
    return set()


def value_problems(where: str, metric: str, matcher: promql_parser.Matcher, jobs: set[str]) -> list[str]:
    known = set(jobs) if matcher.name == "job" else KNOWN_VALUES.get(matcher.name)
    if known is None or (matcher.name == "status" and metric in HTTP_STATUS_METRICS):
        return []
    if matcher.op in (promql_parser.MatchOp.Equal, promql_parser.MatchOp.NotEqual):
        values = [matcher.value]
    elif re.fullmatch(r"[A-Za-z0-9_-]+(\|[A-Za-z0-9_-]+)*", matcher.value):  # plain alternatives
        values = matcher.value.split("|")
    else:
        return [f"{where}: {matcher.name}=~{matcher.value!r}: use plain alternatives (a|b) on closed sets"]
    return [
        f"{where}: {metric}: {matcher.name}={v!r} is not one of {sorted(known)}"
        for v in values
        if v not in known
    ]


def scrape_jobs(config: Path) -> set[str]:
    return {job["job_name"] for job in yaml.safe_load(config.read_text())["scrape_configs"]}


# -------------------------------------------------------------------------------- tests


def test_every_query_parses() -> None:
    queries = all_queries()
    assert len(queries) >= 20
    failures = []
    for query in queries:
        try:
            parse(query.expr)
        except ValueError as exc:
            failures.append(f"{query.where}: {exc}")
    assert failures == []


def test_alerts_and_dashboard_name_only_exported_metrics() -> None:
    assert unknown_metrics(all_queries(), registry_names()) == []


def test_alerts_and_dashboard_use_every_kind_of_series_they_need() -> None:
    # The positive check above is only as good as what it sees: make sure it saw the metrics.
    seen = set().union(*(referenced_metrics(parse(q.expr)) for q in all_queries()))
    assert {
        "up",
        "exporter_jobs_finished_total",
        "exporter_job_duration_seconds_bucket",
        "exporter_dlq_messages",
        "exporter_outbox_lag_seconds",
        "exporter_queue_messages",
    } <= seen


def test_registry_names_agree_with_the_exposition_text() -> None:
    # What the registry lists covers what /metrics shows today...
    assert exposition_names(generate_latest(REGISTRY).decode()) <= registry_names()
    # ...and the names listed for families without samples are the ones they show once used.
    registry = CollectorRegistry()
    counter = Counter("probe_events_total", "x", ["kind"], registry=registry)
    histogram = Histogram("probe_seconds", "x", ["kind"], registry=registry)
    before = registry_names(registry)
    counter.labels("a").inc()
    histogram.labels("a").observe(1)
    assert exposition_names(generate_latest(registry).decode()) == before


def test_the_metric_check_rejects_what_is_not_exported() -> None:
    exported = registry_names()
    assert "exporter_jobs_submitted_total" in exported
    assert "exporter_job_duration_seconds_bucket" in exported  # no samples yet, still listed
    bad = [
        Query("typo", "sum(rate(exporter_jobs_submited_total[5m]))"),
        Query("counter without _total", "rate(exporter_jobs_submitted[5m])"),
        Query("histogram without a suffix", "exporter_job_duration_seconds"),
        Query("by __name__", '{__name__="exporter_nope"}'),
        Query("no name", '{job="exporter-api"}'),
        Query("broken", "sum(rate(exporter_jobs_submitted_total[5m])"),
        Query("grafana variable", "rate(exporter_jobs_submitted_total[$interval])"),
    ]
    problems = unknown_metrics(bad, exported)
    assert [p.split(":")[0] for p in problems] == [q.where for q in bad]
    assert unknown_metrics([Query("ok", "sum(up) + exporter_dlq_messages")], exported) == []


def test_labels_and_label_values_exist() -> None:
    jobs = scrape_jobs(PROMETHEUS_COMPOSE)
    assert label_problems(all_queries(), series_labels(), jobs) == []


def test_the_label_check_rejects_unknown_labels_and_values() -> None:
    labels, jobs = series_labels(), scrape_jobs(PROMETHEUS_COMPOSE)
    bad = [
        Query("label", 'exporter_jobs_finished_total{tool="forms"}'),
        Query("status value", 'exporter_jobs_finished_total{status="done"}'),
        Query("status alternatives", 'exporter_jobs_finished_total{status=~"failed|rollback"}'),
        Query("queue", 'exporter_queue_messages{queue="request"}'),
        Query("job", 'up{job="exporter-workers"}'),
        Query("by", "sum by (route) (exporter_jobs_in_progress)"),
        Query("legend", "sum by (format) (exporter_jobs_in_progress)", frozenset({"tool_type"})),
    ]
    for query in bad:
        assert label_problems([query], labels, jobs) != [], query.where
    latency = Query(
        "the latency histogram has no status label",
        'sum by (le, route) (rate(exporter_http_request_duration_seconds_bucket{status!="500"}[5m]))',
    )
    assert label_problems([latency], labels, jobs) != []
    http = Query(
        "http status", 'sum by (route) (exporter_http_requests_total{status="500"})', frozenset({"route"})
    )
    assert label_problems([http], labels, jobs) == []


def test_required_alerts_are_there_with_severity_and_text() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(REQUIRED_ALERTS.values()) <= set(rules)
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name
    assert rules["ExporterOutboxLagHigh"]["expr"].strip().endswith("> 60")
    assert "> 0.05" in rules["ExporterFailureRatioHigh"]["expr"]
    assert "[10m" in rules["ExporterQueueGrowing"]["expr"] and rules["ExporterQueueGrowing"]["for"] == "10m"
    assert "histogram_quantile(0.95" in rules["ExporterJobDurationHigh"]["expr"]


def test_every_alert_has_a_firing_and_a_quiet_case_in_its_unit_tests() -> None:
    cases = yaml.safe_load(ALERTS_TEST.read_text())
    assert cases["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in cases["tests"]:
        for check in test["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert firing == names
    assert quiet == names


def test_alert_rules_pass_their_unit_tests() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    for config in (PROMETHEUS_COMPOSE,):  # Debian's promtool lacks kubernetes_sd_configs
        result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run([promtool, "test", "rules", str(ALERTS_TEST)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_has_every_required_panel() -> None:
    panels = {panel["title"]: panel for panel in dashboard_panels() if panel["type"] != "row"}
    exprs = {title: " ".join(t["expr"] for t in panel.get("targets", [])) for title, panel in panels.items()}
    required = {
        "Throughput": ["exporter_jobs_finished_total", "exporter_jobs_submitted_total"],
        "Success / failure ratio": ["exporter_jobs_finished_total"],
        "Job duration by tool type and format": ["exporter_job_duration_seconds_bucket"],
        "Step duration (p95) by strategy and step": ["exporter_step_duration_seconds_bucket"],
        "Step retries": ["exporter_step_retries_total"],
        "Rollbacks": ["exporter_rollbacks_total"],
        "Jobs in progress": ["exporter_jobs_in_progress"],
        "Queue depth": ["exporter_queue_messages"],
        "DLQ depth": ["exporter_dlq_messages"],
        "Outbox lag": ["exporter_outbox_lag_seconds"],
        "Status distribution": ["exporter_jobs_by_status"],
        "HTTP latency by route": ["exporter_http_request_duration_seconds_bucket"],
    }
    for title, names in required.items():
        assert title in panels, title
        assert set(names) <= referenced_metrics_of(exprs[title]), title
    assert "by (le, tool_type, format)" in exprs["Job duration by tool type and format"]
    assert "by (le, route)" in exprs["HTTP latency by route"]


def referenced_metrics_of(exprs: str) -> set[str]:
    # Several targets joined by spaces are not one expression: parse each metric-looking word.
    return {word for word in re.findall(r"[a-z_:][a-z0-9_:]*", exprs) if word.startswith("exporter_")}


def test_dashboard_layout_and_datasource() -> None:
    data = dashboard()
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    assert data["uid"] and data["title"]
    datasource_uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == datasource_uid, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource_uid, panel["title"]


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def mount_targets(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of a compose service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def test_grafana_provisioning_matches_the_compose_stack() -> None:
    services = compose_services()
    grafana_mounts = mount_targets(services["grafana"])
    assert (ROOT / grafana_mounts["/etc/grafana/provisioning"]).resolve() == DATASOURCES.parents[1]
    provider = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"][0]
    dashboards_dir = grafana_mounts[provider["options"]["path"]]
    assert (ROOT / dashboards_dir).resolve() == DASHBOARD.parent
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert any(port.endswith(":9090") for port in services["prometheus"]["ports"])


def test_prometheus_scrapes_the_api_and_every_worker_replica_of_the_compose_stack() -> None:
    config = yaml.safe_load(PROMETHEUS_COMPOSE.read_text())
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_COMPOSE.parent / rule_file).is_file()
    services = compose_services()
    mounts = mount_targets(services["prometheus"])
    assert (ROOT / mounts["/etc/prometheus"]).resolve() == PROMETHEUS_COMPOSE.parent
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job_name, service, port_setting in (
        ("exporter-api", "api", "EXPORTER_HTTP_PORT"),
        ("exporter-worker", "worker", "EXPORTER_METRICS_PORT"),
    ):
        (sd,) = jobs[job_name]["dns_sd_configs"]
        assert sd["names"] == [service] and sd["type"] == "A"
        assert str(sd["port"]) == services[service]["environment"][port_setting]
        assert jobs[job_name].get("metrics_path", "/metrics") == "/metrics"


def test_the_kubernetes_scrape_jobs_find_the_pods_of_the_manifests() -> None:
    config = yaml.safe_load(PROMETHEUS_K8S.read_text())
    assert scrape_jobs(PROMETHEUS_K8S) == {"exporter-api", "exporter-worker"}
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_K8S.parent / rule_file).is_file()
    deployments = {
        doc["metadata"]["name"]: doc
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc["kind"] == "Deployment"
    }
    for job in config["scrape_configs"]:
        deployment = deployments[job["job_name"]]  # same names: exporter-api, exporter-worker
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        relabel = job["relabel_configs"]
        keep_labels = relabel[0]
        assert keep_labels["action"] == "keep"
        # Prometheus turns every character of a label name that is not [A-Za-z0-9_] into "_".
        meta = {"__meta_kubernetes_pod_label_" + re.sub(r"\W", "_", k): v for k, v in labels.items()}
        wanted = [meta[source] for source in keep_labels["source_labels"]]
        assert keep_labels["regex"] == ";".join(wanted)
        keep_port = relabel[1]
        assert keep_port["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
        port_names = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert keep_port["regex"] in port_names


def test_alerts_select_on_the_scrape_jobs() -> None:
    used = set()
    for query in all_queries():
        for selector in selectors(parse(query.expr)):
            used |= {
                m.value
                for m in selector.matchers.matchers
                if m.name == "job" and m.op == promql_parser.MatchOp.Equal
            }
    assert used == {"exporter-api", "exporter-worker"}
    assert used <= scrape_jobs(PROMETHEUS_COMPOSE)
    assert used <= scrape_jobs(PROMETHEUS_K8S)


def operations_docs() -> str:
    """The Operations section: in README.md once merged, in deploy/README.md until then."""
    for path in (ROOT / "README.md", ROOT / "deploy/README.md"):
        text = path.read_text()
        if "## Operations" in text:
            section = text.split("## Operations", 1)[1]
            return re.split(r"\n## ", section, maxsplit=1)[0]
    raise AssertionError("no '## Operations' section in README.md or deploy/README.md")


def test_operations_docs_list_every_metric_and_explain_every_alert() -> None:
    docs = operations_docs()
    table = set(re.findall(r"^\| `(exporter_[a-z_]+)` \|", docs, re.MULTILINE))
    documented_names = set()
    for metric in service_metrics():
        family = next(iter(metric.describe()))
        documented_names.add(family.name + ("_total" if family.type == "counter" else ""))
    assert table == documented_names
    for rule in alert_rules():
        assert re.search(rf"^\| `{rule['alert']}` \|", docs, re.MULTILINE), rule["alert"]
    for command in ("exporter dlq list", "exporter dlq show", "exporter dlq replay", "exporter dlq purge"):
        assert command in docs
    assert "--scale worker=" in docs
