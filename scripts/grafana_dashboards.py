"""The three Grafana dashboards of grafana/dashboards/, generated from this one description.

``python -m scripts.grafana_dashboards`` rewrites the JSON files; tests/unit/test_dashboards.py
proves the committed files are exactly what this prints and that they are valid dashboards,
and tests/e2e/test_prometheus.py evaluates every query against a real Prometheus.
Each dashboard has a stable uid, a Prometheus datasource variable and a tenant variable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

OUT: Final = Path(__file__).resolve().parents[1] / "grafana" / "dashboards"
DS: Final = {"type": "prometheus", "uid": "${datasource}"}
T: Final = 'tenant=~"$tenant"'
# Training pods: kube-state-metrics' kube_pod_labels carries the runner's tenant label
# (rai-level-d.io/tenant, see adapters/k8sjobs.py) as label_rai_level_d_io_tenant.
NS: Final = 'namespace="rai-training-jobs"'
POD_TENANT: Final = (
    "label_replace(max by (namespace, pod, label_rai_level_d_io_tenant) (kube_pod_labels{"
    + NS
    + '}), "tenant", "$1", "label_rai_level_d_io_tenant", "(.+)")'
)


def by_tenant(series: str) -> str:
    """``series`` of training pods, summed per tenant through the pods' tenant label."""
    return f"sum by (tenant) ({series} * on (namespace, pod) group_left (tenant) {POD_TENANT})"


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # Grafana panel type
    targets: tuple[tuple[str, str], ...]  # (legend, expr)
    unit: str = "short"
    description: str = ""


OVERVIEW: Final = (
    Panel(
        "Pipelines by outcome",
        "timeseries",
        (
            (
                "{{outcome}}",
                f"sum by (outcome) (increase(rai_pipeline_status_total{{{T}}}[$__rate_interval]))",
            ),
        ),
    ),
    Panel(
        "Pipeline success ratio",
        "stat",
        (
            (
                "succeeded",
                f'sum(rai_pipeline_status_total{{{T},outcome="SUCCEEDED_SHADOW"}})'
                f" / sum(rai_pipeline_status_total{{{T}}})",
            ),
        ),
        unit="percentunit",
        description="SUCCEEDED_SHADOW among finished pipelines since the counters started",
    ),
    Panel(
        "Open dead letters",
        "stat",
        (("{{queue}}", "max by (queue) (rai_dead_letters_open)"),),
    ),
    Panel(
        "Training duration percentiles",
        "timeseries",
        tuple(
            (
                f"p{q}",
                f"histogram_quantile(0.{q}, sum by (le) "
                f"(rate(rai_training_duration_seconds_bucket{{{T}}}[$__rate_interval])))",
            )
            for q in ("50", "95", "99")
        ),
        unit="s",
    ),
    Panel(
        "Ingest rate by outcome",
        "timeseries",
        (
            (
                "{{outcome}}",
                f"sum by (outcome) (rate(rai_ingest_events_total{{{T}}}[$__rate_interval]))",
            ),
        ),
        unit="reqps",
    ),
    Panel(
        "Drift verdicts",
        "timeseries",
        (("{{verdict}}", f"sum by (verdict) (rai_drift_verdicts_total{{{T}}})"),),
    ),
    Panel(
        "Training runs entering each phase",
        "timeseries",
        (("{{phase}}", f"sum by (phase) (rai_training_job_phases_total{{{T}}})"),),
    ),
    Panel(
        "Cooldowns active",
        "stat",
        (("tenants", f"sum(max by (tenant) (rai_retrain_cooldown_active{{{T}}}))"),),
    ),
    Panel(
        "Temporal activity schedule-to-start latency (p95)",
        "timeseries",
        (
            (
                "{{task_queue}}",
                "histogram_quantile(0.95, sum by (le, task_queue) "
                "(rate(temporal_activity_schedule_to_start_latency_bucket[$__rate_interval])))",
            ),
        ),
        unit="s",
    ),
    Panel(
        "Temporal activity failures",
        "timeseries",
        (
            (
                "{{activity_type}}",
                "sum by (activity_type) (temporal_activity_execution_failed_total)",
            ),
        ),
    ),
)

TENANTS: Final = (
    Panel(
        "Top tenants: GPUs requested by training pods",
        "bargauge",
        (
            (
                "{{tenant}}",
                "topk(10, "
                + by_tenant(
                    f'kube_pod_container_resource_requests{{{NS},resource="nvidia_com_gpu"}}'
                )
                + ")",
            ),
        ),
    ),
    Panel(
        "Top tenants: GPU utilisation of training pods",
        "bargauge",
        (
            (
                "{{tenant}}",
                "topk(10, " + by_tenant(f"DCGM_FI_DEV_GPU_UTIL{{{NS}}}") + ")",
            ),
        ),
        unit="percent",
    ),
    Panel(
        "Top tenants: CPU requested by training pods",
        "bargauge",
        (
            (
                "{{tenant}}",
                "topk(10, "
                + by_tenant(f'kube_pod_container_resource_requests{{{NS},resource="cpu"}}')
                + ")",
            ),
        ),
    ),
    Panel(
        "Top tenants: CPU used by training pods",
        "bargauge",
        (
            (
                "{{tenant}}",
                "topk(10, "
                + by_tenant(
                    f"sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{{NS},"
                    f'container!=""}}[$__rate_interval]))'
                )
                + ")",
            ),
        ),
    ),
    Panel(
        "Top tenants: memory requested by training pods",
        "bargauge",
        (
            (
                "{{tenant}}",
                "topk(10, "
                + by_tenant(f'kube_pod_container_resource_requests{{{NS},resource="memory"}}')
                + ")",
            ),
        ),
        unit="bytes",
    ),
    Panel(
        "Top tenants: memory used by training pods",
        "bargauge",
        (
            (
                "{{tenant}}",
                "topk(10, "
                + by_tenant(
                    f"sum by (namespace, pod) (container_memory_working_set_bytes{{{NS},"
                    f'container!=""}})'
                )
                + ")",
            ),
        ),
        unit="bytes",
    ),
    Panel(
        "Running training jobs by tenant",
        "bargauge",
        (
            (
                "{{tenant}}",
                f'topk(10, sum by (tenant) (rai_training_runs_active{{{T},status="RUNNING"}}))',
            ),
        ),
    ),
    Panel(
        "Top tenants: share of ingested events",
        "bargauge",
        (
            (
                "{{tenant}}",
                "topk(10, sum by (tenant) (rai_ingest_events_total)"
                " / scalar(sum(rai_ingest_events_total)))",
            ),
        ),
        unit="percentunit",
    ),
    Panel(
        "Top tenants: pipeline lease hold time",
        "bargauge",
        (("{{tenant}}", "topk(10, sum by (tenant) (rai_lease_hold_duration_seconds_sum))"),),
        unit="s",
    ),
    Panel(
        "Top tenants: pipeline lease wait (p95)",
        "bargauge",
        (
            (
                "{{tenant}}",
                "topk(10, histogram_quantile(0.95, sum by (le, tenant) "
                "(rate(rai_lease_acquire_duration_seconds_bucket[$__rate_interval]))))",
            ),
        ),
        unit="s",
    ),
    Panel(
        "Top tenants: training time",
        "bargauge",
        (("{{tenant}}", "topk(10, sum by (tenant) (rai_training_duration_seconds_sum))"),),
        unit="s",
    ),
)

DRIFT: Final = (
    Panel(
        "PSI by feature",
        "heatmap",
        (("{{feature}}", f"max by (feature) (rai_drift_psi_value{{{T}}})"),),
    ),
    Panel(
        "KS p-value by feature, against the Bonferroni line",
        "timeseries",
        (
            ("{{feature}}", f"min by (feature) (rai_drift_ks_pvalue{{{T}}})"),
            ("Bonferroni alpha", f"max(rai_drift_per_feature_alpha{{{T}}})"),
        ),
    ),
    Panel(
        "Drift verdicts by feature",
        "state-timeline",
        (
            (
                "{{feature}} {{verdict}}",
                f"sum by (feature, verdict) (rai_drift_verdicts_total{{{T}}})",
            ),
        ),
    ),
    Panel(
        "Drift reports by verdict (INSUFFICIENT_DATA included)",
        "timeseries",
        (("{{verdict}}", f"sum by (verdict) (rai_drift_reports_total{{{T}}})"),),
    ),
    Panel(
        "Sample sizes",
        "timeseries",
        (("{{window}}", f"max by (window) (rai_drift_sample_size{{{T}}})"),),
    ),
)

DASHBOARDS: Final = {
    "rai-level-d-overview": ("Level D Overview", OVERVIEW),
    "rai-level-d-tenant-isolation": ("Tenant Isolation", TENANTS),
    "rai-level-d-drift-monitor": ("Drift Monitor", DRIFT),
}


def _panel(index: int, panel: Panel) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + n), "datasource": DS, "expr": expr, "legendFormat": legend}
            for n, (legend, expr) in enumerate(panel.targets)
        ],
    }


def dashboard(uid: str) -> dict[str, Any]:
    title, panels = DASHBOARDS[uid]
    return {
        "uid": uid,
        "title": title,
        "tags": ["rai-level-d"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                {
                    "name": "tenant",
                    "label": "Tenant",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": "label_values(rai_tenant_info, tenant)",
                        "refId": "tenants",
                    },
                    "definition": "label_values(rai_tenant_info, tenant)",
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "refresh": 2,
                    "current": {},
                },
            ]
        },
        "panels": [_panel(i, p) for i, p in enumerate(panels)],
    }


def render(uid: str) -> str:
    return json.dumps(dashboard(uid), indent=2, sort_keys=True) + "\n"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for uid in DASHBOARDS:
        (OUT / f"{uid}.json").write_text(render(uid), encoding="utf-8")


if __name__ == "__main__":
    main()
