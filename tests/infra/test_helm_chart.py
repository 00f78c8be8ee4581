"""The Helm chart infra/helm/rai-level-d: lint, schema, Kubernetes schemas, checkov, and the
laws of issue 8 asserted over what it renders (default and production-like values)."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.chart import (
    CHART,
    KUBERNETES_VERSIONS,
    PRODUCTION_VALUES,
    RELEASE,
    RELEASE_NAMESPACE,
    TRAINING_NAMESPACE,
    CheckovReport,
    Manifest,
    Render,
    containers,
    env_of,
    env_value,
    helm,
    load_values,
    render,
    secret_ref,
    template_args,
    tool,
)

pytestmark = pytest.mark.unit

RENDERS = ["default_render", "production_render"]
TRAINING_JOB_LABELS = {
    "app.kubernetes.io/part-of": "rai-level-d",
    "app.kubernetes.io/component": "training-job",
}
WORKER_QUEUES = ("training", "drift")


@pytest.fixture(params=RENDERS)
def any_render(request: pytest.FixtureRequest) -> Render:
    rendered: Render = request.getfixturevalue(request.param)
    return rendered


def _name(suffix: str = "") -> str:
    return RELEASE + (f"-{suffix}" if suffix else "")


# --- the tools' verdicts ------------------------------------------------------------------


@pytest.mark.parametrize("values", [(), (PRODUCTION_VALUES,)], ids=["default", "production"])
def test_helm_lint_strict(values: tuple[Path, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for file in values:
        args += ["--values", str(file)]
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def _kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    command = [str(tool("kubernetes-validate")), "--strict"]
    for version in KUBERNETES_VERSIONS:
        command += ["--kubernetes-version", version]
    return subprocess.run(
        [*command, str(path)], capture_output=True, text=True, timeout=120, check=False
    )


def test_every_rendered_object_validates_strictly(any_render: Render) -> None:
    """Each object passes the strict OpenAPI schema of every supported Kubernetes version;
    none is skipped for want of a schema."""
    result = _kubernetes_validate(any_render.path)
    assert result.returncode == 0, result.stdout + result.stderr
    problems = [line for line in result.stdout.splitlines() if not line.startswith("INFO")]
    assert problems == []
    passed = set(re.findall(r"passed for resource (\S+) against version (\S+)", result.stdout))
    expected = {
        (f"{o['kind'].lower()}/{o['metadata']['name']}", version.rsplit(".", 1)[0])
        for o in any_render.objects
        for version in KUBERNETES_VERSIONS
    }
    assert passed == expected


def test_strict_validation_rejects_an_unknown_field(default_render: Render, tmp_path: Path) -> None:
    """The validator above is not vacuous: a misspelt field fails it."""
    deployment = default_render.one("Deployment", _name("api"))
    tampered = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    path = tmp_path / "tampered.yaml"
    path.write_text(yaml.safe_dump(tampered), encoding="utf-8")
    result = _kubernetes_validate(path)
    assert result.returncode != 0
    assert "replica" in result.stdout


@pytest.mark.parametrize("which", ["default", "production"])
def test_checkov_finds_nothing(checkov_reports: dict[str, CheckovReport], which: str) -> None:
    report = checkov_reports[which]
    assert report.failed() == []
    kubernetes = report.by_framework["kubernetes"]["summary"]
    assert kubernetes["parsing_errors"] == 0
    assert kubernetes["passed"] > 300, kubernetes  # the checks did run over the workloads


# --- values.schema.json -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("api.replicas=two", "/api/replicas"),
        ("api.replicaz=2", "replicaz"),
        ("runAsUser=0", "/runAsUser"),
        ("image.digest=sha256:abc", "/image/digest"),
        ("tenants[0].id=not-a-uuid,tenants[0].every=24h", "/tenants/0/id"),
        (
            "tenants[0].id=3f2b7c1e-8a4d-4e6f-9b0a-1c2d3e4f5a6b,tenants[0].every=daily",
            "/tenants/0/every",
        ),
        ("trainingNamespace.networkPolicy.s3.cidrs[0]=s3.amazonaws.com", "/cidrs/0"),
        ("trainingNamespace.quota.requestsGpu=lots", "/requestsGpu"),
        ("runtimeClass.create=maybe", "/runtimeClass/create"),
        ("redis.external.url=redis://:hunter2@redis:6379/0", "/redis/external/url"),
        ("database.sslmode=sometimes", "/database/sslmode"),
        ("trainer.gpuCount=-1", "/trainer/gpuCount"),
    ],
)
def test_schema_rejects_a_wrong_value(setting: str, complaint: str) -> None:
    result = helm(*template_args(settings=[setting]))
    assert result.returncode != 0, f"{setting} was accepted"
    assert complaint in result.stderr, result.stderr


def test_schema_rejects_a_wrong_value_at_install() -> None:
    result = helm(
        "install", RELEASE, str(CHART), "--dry-run=client", "--set", "workers.drift.replicas=0"
    )
    assert result.returncode != 0
    assert "/workers/drift/replicas" in result.stderr


def test_a_tenant_listed_twice_is_refused() -> None:
    tenant = "3f2b7c1e-8a4d-4e6f-9b0a-1c2d3e4f5a6b"
    result = helm(
        *template_args(
            settings=[
                f"tenants[0].id={tenant},tenants[0].every=24h"
                f",tenants[1].id={tenant},tenants[1].every=1h"
            ]
        )
    )
    assert result.returncode != 0
    assert f"tenants: {tenant} is listed twice" in result.stderr


def test_redis_must_be_somewhere() -> None:
    result = helm(*template_args(settings=["redis.internal.enabled=false"]))
    assert result.returncode != 0
    assert "redis.external.url or redis.external.existingSecret is required" in result.stderr


# --- M10: every pod of the chart is restricted -----------------------------------------


def test_every_workload_is_rendered(default_render: Render, production_render: Render) -> None:
    def workloads(rendered: Render) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in rendered.workloads()}

    common = {
        ("Deployment", _name("api")),
        ("Deployment", _name("worker-training")),
        ("Deployment", _name("worker-drift")),
        ("StatefulSet", _name("redis")),
        ("Job", _name("migrate")),
    }
    assert workloads(default_render) == common
    assert workloads(production_render) == common | {("Job", _name("schedules"))}


def _effective(pod: Manifest, container: Manifest, field: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    own = container.get("securityContext", {})
    return own[field] if field in own else pod.get("securityContext", {}).get(field)


def test_every_pod_runs_restricted(any_render: Render) -> None:
    for workload in any_render.workloads():
        where = f"{workload['kind']} {workload['metadata']['name']}"
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(key, False), where
        assert not any("hostPath" in volume for volume in pod.get("volumes", [])), where
        assert pod.get("serviceAccountName"), f"{where} runs as the default ServiceAccount"
        for container in containers(pod):
            at = f"{where} container {container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, at
            assert context["allowPrivilegeEscalation"] is False, at
            assert context.get("privileged", False) is False, at
            assert context["capabilities"] == {"drop": ["ALL"]}, at
            assert _effective(pod, container, "runAsNonRoot") is True, at
            assert _effective(pod, container, "runAsUser") > 0, at
            assert _effective(pod, container, "runAsGroup") > 0, at
            assert _effective(pod, container, "seccompProfile") == {"type": "RuntimeDefault"}, at
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert set(resources[bound]) >= {"cpu", "memory"}, f"{at}: {bound}"


def test_only_the_training_worker_holds_a_token(any_render: Render) -> None:
    holders = {
        o["metadata"]["name"]
        for o in any_render.workloads()
        if o["spec"]["template"]["spec"]["automountServiceAccountToken"] is not False
    }
    assert holders == {_name("worker-training")}
    for account in any_render.of_kind("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]


def test_long_running_pods_have_probes_and_disruption_budgets(any_render: Render) -> None:
    budgets = {
        tuple(sorted(pdb["spec"]["selector"]["matchLabels"].items())): pdb
        for pdb in any_render.of_kind("PodDisruptionBudget")
    }
    deployments = any_render.of_kind("Deployment")
    assert len(budgets) == len(deployments) == 3
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert tuple(sorted(selector.items())) in budgets, deployment["metadata"]["name"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert "livenessProbe" in container
        assert "readinessProbe" in container


# --- the API and the workers ----------------------------------------------------------


def test_api_serves_health_and_metrics_on_its_port(production_render: Render) -> None:
    values = load_values(PRODUCTION_VALUES)
    api = production_render.one("Deployment", _name("api"))
    assert api["spec"]["replicas"] == values["api"]["replicas"]
    template = api["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["command"] == ["rai", "api"]
    port = values["api"]["port"]
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    # Listening on every address of the pod, or the Service could not reach it.
    assert ipaddress.ip_address(env_value(container, "RAI_API_HOST")).is_unspecified
    assert env_value(container, "RAI_API_PORT") == str(port)
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    service = production_render.one("Service", _name("api"))
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("queue", WORKER_QUEUES)
def test_one_worker_deployment_per_queue(production_render: Render, queue: str) -> None:
    values = load_values(PRODUCTION_VALUES)
    worker = production_render.one("Deployment", _name(f"worker-{queue}"))
    assert worker["spec"]["replicas"] == values["workers"][queue]["replicas"]
    template = worker["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["command"] == ["rai", "worker", "--queue", queue]
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9464",
        "prometheus.io/path": "/metrics",
    }
    assert env_value(container, "RAI_WORKER_METRICS_PORT") == "9464"
    # Prometheus scrapes the pod's address, not its loopback.
    assert env_value(container, "RAI_WORKER_METRICS_HOST") == "0.0.0.0"  # noqa: S104
    assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in container["ports"]


def test_workers_sign_with_the_mounted_platform_key(any_render: Render) -> None:
    for queue in WORKER_QUEUES:
        pod = any_render.one("Deployment", _name(f"worker-{queue}"))["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert "RAI_PLATFORM_SIGNING_KEY" not in env_of(container)
        key_file = Path(env_value(container, "RAI_PLATFORM_KEY_FILE"))
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "platform-key"]
        assert mount["readOnly"] is True
        assert key_file.parent == Path(mount["mountPath"])
        (volume,) = [v for v in pod["volumes"] if v["name"] == "platform-key"]
        assert volume["secret"]["items"] == [{"key": key_file.name, "path": key_file.name}]


def test_the_training_worker_runs_kubernetes_jobs(production_render: Render) -> None:
    values = load_values(PRODUCTION_VALUES)
    (container,) = production_render.one("Deployment", _name("worker-training"))["spec"][
        "template"
    ]["spec"]["containers"]
    trainer = values["trainer"]
    image = values["image"]
    expected = {
        "RAI_JOB_RUNNER": "kubernetes",
        "RAI_K8S_NAMESPACE": TRAINING_NAMESPACE,
        "RAI_TRAINER_IMAGE": f"{image['repository']}@{image['digest']}",
        "RAI_TRAINER_IMAGE_PULL_SECRETS": ",".join(trainer["imagePullSecrets"]),
        "RAI_TRAINER_GPU_COUNT": str(trainer["gpuCount"]),
        "RAI_TRAINER_CPU_REQUEST": trainer["cpuRequest"],
        "RAI_TRAINER_CPU_LIMIT": trainer["cpuLimit"],
        "RAI_TRAINER_MEMORY_REQUEST": trainer["memoryRequest"],
        "RAI_TRAINER_MEMORY_LIMIT": trainer["memoryLimit"],
        "RAI_TRAINER_ACTIVE_DEADLINE_SECONDS": str(trainer["activeDeadlineSeconds"]),
        "RAI_TRAINER_TTL_SECONDS_AFTER_FINISHED": str(trainer["ttlSecondsAfterFinished"]),
        "RAI_TRAINER_S3_SECRET": trainer["s3ExistingSecret"],
        "RAI_CALLBACK_URL": (
            f"http://{_name('api')}.{RELEASE_NAMESPACE}.svc.cluster.local:80/v1/callbacks/training"
        ),
        "RAI_REDIS_REQUIRE_AOF": "true",
    }
    assert {name: env_value(container, name) for name in expected} == expected


def test_only_the_training_worker_launches_jobs(any_render: Render) -> None:
    for workload in any_render.workloads():
        if workload["metadata"]["name"] == _name("worker-training"):
            continue
        for container in containers(workload["spec"]["template"]["spec"]):
            launcher_settings = {
                name for name in env_of(container) if name.startswith(("RAI_TRAINER_", "RAI_K8S_"))
            }
            assert launcher_settings == set(), workload["metadata"]["name"]
            assert "RAI_JOB_RUNNER" not in env_of(container)


# --- secrets: only references ----------------------------------------------------------


SECRET_LOOKING = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|AUTH|DATABASE_URL|REDIS_URL")
# Settings whose value names a Secret or a file, never holds one.
SECRET_NAMES_NOT_VALUES = {
    "RAI_TRAINER_S3_SECRET",
    "RAI_TRAINER_IMAGE_PULL_SECRETS",
    "RAI_PLATFORM_KEY_FILE",
}


def test_no_secret_value_is_rendered(any_render: Render) -> None:
    assert any_render.of_kind("Secret") == []
    for workload in any_render.workloads():
        for container in containers(workload["spec"]["template"]["spec"]):
            for name, entry in env_of(container).items():
                if not SECRET_LOOKING.search(name) or name in SECRET_NAMES_NOT_VALUES:
                    continue
                value = entry.get("value")
                if value is None:
                    assert "secretKeyRef" in entry["valueFrom"], name
                    continue
                # A URL may name a host, never carry a password of its own.
                assert re.fullmatch(r"[a-z]+://(:\$\(REDIS_PASSWORD\)@)?[^:@/]+:\d+/\S*", value), (
                    f"{workload['metadata']['name']}: {name}={value}"
                )


def test_credentials_come_from_the_named_secrets(production_render: Render) -> None:
    values = load_values(PRODUCTION_VALUES)
    db, s3, redis = values["database"], values["s3"], values["redis"]["internal"]["auth"]
    (api,) = production_render.one("Deployment", _name("api"))["spec"]["template"]["spec"][
        "containers"
    ]
    assert secret_ref(api, "RAI_APP_DB_PASSWORD") == (db["existingSecret"], db["appPasswordKey"])
    assert env_value(api, "RAI_DATABASE_URL") == (
        f"postgresql://{db['host']}:{db['port']}/{db['name']}?sslmode={db['sslmode']}"
    )
    assert not {"RAI_S3_SECRET_KEY", "REDIS_PASSWORD"} & set(env_of(api))
    (worker,) = production_render.one("Deployment", _name("worker-drift"))["spec"]["template"][
        "spec"
    ]["containers"]
    assert secret_ref(worker, "RAI_S3_ACCESS_KEY") == (s3["existingSecret"], s3["accessKeyKey"])
    assert secret_ref(worker, "RAI_S3_SECRET_KEY") == (s3["existingSecret"], s3["secretKeyKey"])
    assert secret_ref(worker, "REDIS_PASSWORD") == (redis["existingSecret"], redis["passwordKey"])
    assert env_value(worker, "RAI_REDIS_URL") == (
        f"redis://:$(REDIS_PASSWORD)@{_name('redis')}.{RELEASE_NAMESPACE}.svc.cluster.local:6379/0"
    )
    # The kubelet expands $(VAR) only from variables defined earlier in the list.
    order = list(env_of(worker))
    assert order.index("REDIS_PASSWORD") < order.index("RAI_REDIS_URL")


def test_only_the_workers_and_the_migration_hold_the_metrics_login(
    production_render: Render,
) -> None:
    """rai_metrics can list every tenant's name (the worker's internal metrics endpoint); the
    API, which answers the outside, never gets its password. The migration sets it."""
    db = load_values(PRODUCTION_VALUES)["database"]
    expected = (db["existingSecret"], db["metricsPasswordKey"])
    holders = {}
    for workload in production_render.workloads():
        for container in containers(workload["spec"]["template"]["spec"]):
            if "RAI_METRICS_DB_PASSWORD" in env_of(container):
                holders[workload["metadata"]["name"]] = secret_ref(
                    container, "RAI_METRICS_DB_PASSWORD"
                )
            assert "RAI_METRICS_DATABASE_URL" not in env_of(container)
    assert holders == {
        _name("migrate"): expected,
        _name("worker-training"): expected,
        _name("worker-drift"): expected,
    }


def test_only_the_migration_sees_the_administrative_login(any_render: Render) -> None:
    holders = set()
    for workload in any_render.workloads():
        for container in containers(workload["spec"]["template"]["spec"]):
            ref = env_of(container).get("RAI_DATABASE_URL", {}).get("valueFrom")
            if ref is not None:
                holders.add(workload["metadata"]["name"])
                assert ref["secretKeyRef"]["key"] == "admin-url"
    assert holders == {_name("migrate")}


# --- hooks ------------------------------------------------------------------------------


def test_migration_runs_before_install_and_upgrade(any_render: Render) -> None:
    job = any_render.one("Job", _name("migrate"))
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["rai", "db", "migrate"]
    # Its ServiceAccount is a hook too, created first: pre-install runs before the release's
    # own objects exist.
    account = any_render.one("ServiceAccount", pod["serviceAccountName"])
    assert account["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(account["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"]
    )


def test_schedules_are_applied_for_each_tenant(
    default_render: Render, production_render: Render
) -> None:
    assert [j["metadata"]["name"] for j in default_render.of_kind("Job")] == [_name("migrate")]
    job = production_render.one("Job", _name("schedules"))
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    steps = [c["command"] for c in job["spec"]["template"]["spec"]["initContainers"]]
    assert steps == [
        ["rai", "schedule", "apply", "--tenant", tenant["id"], "--every", tenant["every"]]
        for tenant in load_values(PRODUCTION_VALUES)["tenants"]
    ]
    assert len(steps) == 3


# --- M5: Redis keeps the lease ----------------------------------------------------------


def test_in_chart_redis_is_durable_and_never_evicts(any_render: Render) -> None:
    config = any_render.one("ConfigMap", _name("redis"))["data"]["redis.conf"]
    directives = dict(line.split(" ", 1) for line in config.splitlines() if line.strip())
    assert directives["appendonly"] == "yes"
    assert directives["appendfsync"] == "everysec"
    assert directives["maxmemory-policy"] == "noeviction"
    assert directives["dir"] == "/data"
    redis = any_render.one("StatefulSet", _name("redis"))
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["redis-server", "/etc/redis/redis.conf"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/data"] == "data"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"]


def test_external_redis_replaces_the_in_chart_one(tmp_path: Path) -> None:
    rendered = render(
        tmp_path / "external.yaml",
        settings=["redis.internal.enabled=false", "redis.external.url=redis://cache:6379/2"],
    )
    assert rendered.of_kind("StatefulSet") == []
    (worker,) = rendered.one("Deployment", _name("worker-training"))["spec"]["template"]["spec"][
        "containers"
    ]
    assert env_value(worker, "RAI_REDIS_URL") == "redis://cache:6379/2"
    assert "REDIS_PASSWORD" not in env_of(worker)


# --- M9: the training namespace ---------------------------------------------------------


def test_training_namespace_enforces_restricted_pod_security(any_render: Render) -> None:
    namespace = any_render.one("Namespace", TRAINING_NAMESPACE)
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_training_quota_covers_gpus_and_jobs(production_render: Render) -> None:
    quota = production_render.one("ResourceQuota", "training-jobs")
    assert quota["metadata"]["namespace"] == TRAINING_NAMESPACE
    assert quota["spec"]["hard"] == {
        "requests.cpu": "128",
        "requests.memory": "512Gi",
        "limits.memory": "512Gi",
        "requests.nvidia.com/gpu": "16",
        "count/jobs.batch": "100",
    }
    (limits,) = production_render.one("LimitRange", "training-defaults")["spec"]["limits"]
    assert limits["type"] == "Container"
    assert set(limits["default"]) == set(limits["defaultRequest"]) == {"cpu", "memory"}


def test_runtime_class_nvidia(tmp_path: Path, default_render: Render) -> None:
    runtime = default_render.one("RuntimeClass", "nvidia")
    assert runtime["handler"] == "nvidia"
    never = render(tmp_path / "never.yaml", settings=["runtimeClass.create=never"])
    assert never.of_kind("RuntimeClass") == []


def test_the_job_runner_role_is_exactly_what_the_runner_does(any_render: Render) -> None:
    assert any_render.of_kind("ClusterRole") == []
    assert any_render.of_kind("ClusterRoleBinding") == []
    (role,) = any_render.of_kind("Role")
    assert role["metadata"]["namespace"] == TRAINING_NAMESPACE
    rules = {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert rules == {
        ("batch", "jobs"): ["create", "delete", "get", "list", "watch"],
        ("", "pods"): ["get", "list", "watch"],
        ("", "pods/log"): ["get"],
        ("", "secrets"): ["create", "delete", "get"],
    }
    assert not any("resourceNames" in rule for rule in role["rules"])
    (binding,) = any_render.of_kind("RoleBinding")
    assert binding["metadata"]["namespace"] == TRAINING_NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    worker = any_render.one("Deployment", _name("worker-training"))
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": worker["spec"]["template"]["spec"]["serviceAccountName"],
            "namespace": RELEASE_NAMESPACE,
        }
    ]


# --- M11: the training network ----------------------------------------------------------


def _training_policies(rendered: Render) -> dict[str, Manifest]:
    policies = {
        p["metadata"]["name"]: p
        for p in rendered.of_kind("NetworkPolicy")
        if p["metadata"]["namespace"] == TRAINING_NAMESPACE
    }
    assert set(policies) == {"default-deny", "training-job-egress"}
    return policies


def test_training_namespace_denies_all_traffic_by_default(any_render: Render) -> None:
    deny = _training_policies(any_render)["default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def _api_peer(rendered: Render) -> dict[str, Any]:
    api = rendered.one("Deployment", _name("api"))
    (container,) = api["spec"]["template"]["spec"]["containers"]
    return {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": RELEASE_NAMESPACE}
                },
                "podSelector": {"matchLabels": api["spec"]["selector"]["matchLabels"]},
            }
        ],
        "ports": [{"port": container["ports"][0]["containerPort"], "protocol": "TCP"}],
    }


DNS_PEER = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
}


def test_training_pods_reach_only_s3_database_dns_and_the_callback(
    production_render: Render,
) -> None:
    policy = _training_policies(production_render)["training-job-egress"]["spec"]
    assert policy["podSelector"] == {"matchLabels": TRAINING_JOB_LABELS}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy
    network = load_values(PRODUCTION_VALUES)["trainingNamespace"]["networkPolicy"]
    assert policy["egress"] == [
        {
            "to": [{"ipBlock": {"cidr": cidr}} for cidr in network["s3"]["cidrs"]],
            "ports": [{"port": 443, "protocol": "TCP"}],
        },
        {
            "to": [{"ipBlock": {"cidr": cidr}} for cidr in network["database"]["cidrs"]],
            "ports": [{"port": 5432, "protocol": "TCP"}],
        },
        DNS_PEER,
        _api_peer(production_render),
    ]
    # The callback peer selects the API pods that actually run.
    api = production_render.one("Deployment", _name("api"))
    labels = api["spec"]["template"]["metadata"]["labels"]
    selector = policy["egress"][3]["to"][0]["podSelector"]["matchLabels"]
    assert selector.items() <= labels.items()


def test_without_cidrs_training_pods_reach_only_dns_and_the_callback(
    default_render: Render,
) -> None:
    policy = _training_policies(default_render)["training-job-egress"]["spec"]
    assert policy["egress"] == [DNS_PEER, _api_peer(default_render)]


def test_in_chart_redis_admits_only_the_workers(default_render: Render) -> None:
    policy = default_render.one("NetworkPolicy", _name("redis"))["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    components = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule["from"]
    }
    assert components == {"worker-training", "worker-drift"}


# --- NOTES.txt ----------------------------------------------------------------------------


def test_notes_tell_how_to_reach_the_api_and_the_temporal_ui() -> None:
    result = helm(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "--namespace",
        RELEASE_NAMESPACE,
        "--values",
        str(PRODUCTION_VALUES),
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"port-forward svc/{_name('api')} 8088:80" in notes
    assert "https://temporal.example.com" in notes
    assert f"-n {TRAINING_NAMESPACE} get jobs -l app.kubernetes.io/component=training-job" in notes
    assert "WARNING" not in notes
