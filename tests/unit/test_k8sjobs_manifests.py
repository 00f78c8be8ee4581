"""The Kubernetes runner's pure parts: its manifests (validated strictly against the Kubernetes
1.30 schemas, the API server's rules and Pod Security restricted), labels and settings (the
size of the trainer's result in a termination message: tests/unit/test_trainer_result_file.py)."""

from __future__ import annotations

import base64
import json
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from adapters.k8sjobs import (
    MODEL_ANNOTATION,
    MODEL_LABEL,
    TMP_MOUNT_PATH,
    KubernetesJobConfig,
    job_labels,
    job_manifest,
    label_value,
    quantity_value,
    secret_manifest,
    secret_name_for,
)
from domain.jobs import JobOrigin, JobSpec, job_name_for
from domain.training import TrainingJobArgs
from settings import Settings
from tests.k8s_fake import restricted_violations, schema_problems, semantic_problems

pytestmark = pytest.mark.unit

NAMESPACE = "rai-training-jobs"
SECRETS = {
    "RAI_CALLBACK_SIGNING_KEY": "c0ffee" * 10 + "c0ff",
    "RAI_S3_ACCESS_KEY": "worker-access",
    "RAI_S3_SECRET_KEY": "worker-secret-value",
}


def spec_for(model_name: str = "yield-ridge", attempt: int = 1) -> JobSpec:
    args = TrainingJobArgs(
        tenant_id=uuid4(),
        training_run_id=uuid4(),
        model_name=model_name,
        dataset_uri="s3://rai-datasets/snapshots/t/r.jsonl?versionId=v1",
        dataset_sha256="a" * 64,
        output_prefix="s3://rai-model-registry/models/t/r/",
        callback_url="http://rai-api.rai.svc:8088/v1/callbacks/training",
    )
    return JobSpec(
        name=job_name_for(args.training_run_id, attempt),
        argv=tuple(args.to_argv()),
        origin=JobOrigin(args.tenant_id, args.training_run_id, attempt, model_name),
        env={"RAI_S3_ENDPOINT_URL": "http://s3.example:8333", "RAI_S3_REGION": "eu-west-1"},
        secret_env=SECRETS,
    )


CONFIGS = {
    "defaults": KubernetesJobConfig(image="registry.example/rai-trainer:1.0"),
    "production-like": KubernetesJobConfig(
        image="registry.example/rai-trainer@sha256:" + "b" * 64,
        namespace="gpu-jobs",
        image_pull_secrets=("registry-a", "registry-b"),
        gpu_count=4,
        cpu_request="3500m",
        cpu_limit="8",
        memory_request="30Gi",
        memory_limit="64Gi",
        active_deadline_seconds=7200,
        ttl_seconds_after_finished=3600,
        s3_credentials_ref="trainer-s3",
        run_as_user=20000,
        run_as_group=20001,
    ),
}


def valid(manifest: dict[str, Any], resource: str, namespace: str) -> list[str]:
    problems = schema_problems(manifest) + semantic_problems(resource, manifest, namespace)
    if resource == "jobs":
        problems += restricted_violations(manifest["spec"]["template"]["spec"])
    return problems


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("model", ["yield-ridge", "A" * 100 + ".v2_", "x"])
def test_the_job_and_its_secret_validate_strictly(name: str, model: str) -> None:
    config = CONFIGS[name]
    spec = spec_for(model)
    job = job_manifest(spec, config)
    assert valid(job, "jobs", config.namespace) == []
    secret = secret_manifest(spec, config, job_uid=str(uuid4()))
    assert secret is not None
    assert valid(secret, "secrets", config.namespace) == []


def test_an_invalid_manifest_is_caught_by_the_validation_the_fake_server_runs() -> None:
    config = CONFIGS["defaults"]
    job = job_manifest(spec_for(), config)
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsRoot"] = True
    assert any("runAsRoot" in problem for problem in schema_problems(job))
    job = job_manifest(spec_for(), config)
    del job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
    assert restricted_violations(job["spec"]["template"]["spec"]) == [
        "container trainer: capabilities.drop lacks ALL"
    ]
    job = job_manifest(spec_for(), config)
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "5"
    assert semantic_problems("jobs", job, NAMESPACE) == [
        "spec.template.spec.containers[0].resources.requests[cpu]: must be <= the limit"
    ]


def test_the_pod_spec_is_the_restricted_gpu_spec_of_m10() -> None:
    config = CONFIGS["production-like"]
    spec = spec_for()
    job = job_manifest(spec, config)
    assert job["metadata"]["name"] == spec.name
    assert job["metadata"]["namespace"] == "gpu-jobs"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["imagePullSecrets"] == [{"name": "registry-a"}, {"name": "registry-b"}]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 20000,
        "runAsGroup": 20001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    (container,) = pod["containers"]
    assert container["image"] == config.image
    assert container["command"] == ["python"]
    assert container["args"] == [*spec.argv, "--result-file", "/dev/termination-log"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": TMP_MOUNT_PATH}]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 20000
    assert context["runAsGroup"] == 20001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"] == {
        "requests": {"cpu": "3500m", "memory": "30Gi"},
        "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "4"},
    }
    labels = job_labels(spec.origin)
    assert job["metadata"]["labels"] == labels
    assert job["spec"]["template"]["metadata"]["labels"] == labels


def test_secrets_are_referenced_never_written_into_the_job() -> None:
    spec = spec_for()
    for config in CONFIGS.values():
        text = json.dumps(job_manifest(spec, config))
        for value in SECRETS.values():
            assert value not in text
    container = job_manifest(spec, CONFIGS["defaults"])["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [
        {"name": "RAI_S3_ENDPOINT_URL", "value": "http://s3.example:8333"},
        {"name": "RAI_S3_REGION", "value": "eu-west-1"},
    ]
    assert container["envFrom"] == [{"secretRef": {"name": secret_name_for(spec.name)}}]


def test_an_existing_s3_secret_replaces_the_workers_credentials() -> None:
    spec = spec_for()
    config = CONFIGS["production-like"]
    container = job_manifest(spec, config)["spec"]["template"]["spec"]["containers"][0]
    # Later envFrom sources win: the trainer's own S3 Secret comes last.
    assert container["envFrom"] == [
        {"secretRef": {"name": secret_name_for(spec.name)}},
        {"secretRef": {"name": "trainer-s3"}},
    ]
    secret = secret_manifest(spec, config, job_uid="u-1")
    assert secret is not None
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "RAI_CALLBACK_SIGNING_KEY": SECRETS["RAI_CALLBACK_SIGNING_KEY"]
    }
    only_s3 = JobSpec(
        name=spec.name,
        argv=spec.argv,
        origin=spec.origin,
        secret_env={"RAI_S3_ACCESS_KEY": "a", "RAI_S3_SECRET_KEY": "b"},
    )
    assert secret_manifest(only_s3, config, job_uid="u-1") is None
    container = job_manifest(only_s3, config)["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "trainer-s3"}}]


def test_the_secret_is_owned_by_its_job_and_immutable() -> None:
    spec = spec_for()
    secret = secret_manifest(spec, CONFIGS["defaults"], job_uid="3f0c")
    assert secret is not None
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": spec.name, "uid": "3f0c"}
    ]
    assert secret["immutable"] is True
    assert secret["metadata"]["labels"] == job_labels(spec.origin)
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == SECRETS


def test_labels_follow_the_contract_and_a_long_model_name_stays_in_the_annotation() -> None:
    spec = spec_for("A" * 100 + ".v2_", attempt=3)
    labels = job_labels(spec.origin)
    assert labels == {
        "app.kubernetes.io/part-of": "rai-level-d",
        "app.kubernetes.io/component": "training-job",
        "rai-level-d.io/tenant": str(spec.origin.tenant_id),
        "rai-level-d.io/training-run": str(spec.origin.training_run_id),
        "rai-level-d.io/attempt": "3",
        "rai-level-d.io/model": labels[MODEL_LABEL],
    }
    assert len(labels[MODEL_LABEL]) <= 63
    assert labels[MODEL_LABEL].startswith("A" * 40)
    annotations = job_manifest(spec, CONFIGS["defaults"])["metadata"]["annotations"]
    assert annotations == {MODEL_ANNOTATION: "A" * 100 + ".v2_"}
    assert label_value("yield-ridge") == "yield-ridge"
    assert label_value("A" * 100 + ".v2_") == labels[MODEL_LABEL]  # deterministic
    assert label_value("A" * 100 + ".v3_") != labels[MODEL_LABEL]
    assert label_value("model.") != label_value("model_")
    for odd in ("model.", "-x-", "a" * 64, "ü"):
        assert (
            semantic_problems(
                "secrets",
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "s", "labels": {"k": label_value(odd)}},
                },
                NAMESPACE,
            )
            == []
        ), odd


def test_quantities() -> None:
    assert quantity_value("500m") == quantity_value("0.5")
    assert quantity_value("8Gi") == 8 * 1024**3
    assert quantity_value("2k") == 2000
    assert quantity_value(".5") == quantity_value("500m")
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity_value("four")


def test_the_config_comes_from_the_settings_and_refuses_what_cannot_work() -> None:
    settings = Settings(
        trainer_image=" registry.example/rai-trainer:1.0 ",
        trainer_image_pull_secrets=" registry-a, registry-b,,",
        trainer_gpu_count=2,
        trainer_cpu_request="500m",
        trainer_cpu_limit="1",
        trainer_s3_secret="",
    )
    config = KubernetesJobConfig.from_settings(settings)
    assert config.image == "registry.example/rai-trainer:1.0"
    assert config.image_pull_secrets == ("registry-a", "registry-b")
    assert config.gpu_count == 2
    assert config.s3_credentials_ref is None  # a chart renders an unset value as ""
    assert config.namespace == "rai-training-jobs"
    with pytest.raises(ValueError, match=r"^RAI_TRAINER_IMAGE is required"):
        KubernetesJobConfig.from_settings(Settings())
    with pytest.raises(ValueError, match=r"RAI_TRAINER_CPU_REQUEST \(2\) exceeds"):
        KubernetesJobConfig.from_settings(settings.model_copy(update={"trainer_cpu_request": "2"}))
    with pytest.raises(ValueError, match=r"RAI_TRAINER_MEMORY_REQUEST \(1Ti\) exceeds"):
        KubernetesJobConfig.from_settings(
            settings.model_copy(update={"trainer_memory_request": "1Ti"})
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("k8s_namespace", "Training_Jobs"),
        ("trainer_image_pull_secrets", "ok,Not_OK"),
        ("trainer_s3_secret", "s3 creds"),
        ("trainer_cpu_limit", "four"),
        ("trainer_memory_request", "8GB"),
        ("trainer_gpu_count", 0),
        ("trainer_run_as_user", 0),
        ("job_runner", "nomad"),
        ("k8s_pod_stuck_seconds", 0),
    ],
)
def test_settings_refuse_bad_kubernetes_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings.model_validate({field: value})
