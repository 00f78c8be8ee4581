"""Pod and Job statuses in the shapes real clusters report (kubelet, scheduler and Job
controller of Kubernetes 1.30/1.31: field names, reasons and message texts as they write them),
for tests that drive :class:`tests.k8s_fake.FakeKubernetes` by hand."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from tests.k8s_fake import timestamp

IMAGE: Final = "registry.example/rai-trainer:1.0"
UNSCHEDULABLE_MESSAGE: Final = (
    "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are"
    " available: 3 No preemption victims found for incoming pod."
)
IMAGE_PULL_BACKOFF_MESSAGE: Final = f'Back-off pulling image "{IMAGE}"'
ERR_IMAGE_PULL_MESSAGE: Final = (
    f'rpc error: code = NotFound desc = failed to pull and unpack image "{IMAGE}": failed to'
    f' resolve reference "{IMAGE}": {IMAGE}: not found'
)


def _condition(kind: str, status: str, at: datetime, **more: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": timestamp(at),
        **more,
    }


def _not_ready(at: datetime) -> list[dict[str, Any]]:
    unready = {
        "reason": "ContainersNotReady",
        "message": "containers with unready status: [trainer]",
    }
    return [
        _condition("PodReadyToStartContainers", "True", at),
        _condition("Initialized", "True", at),
        _condition("Ready", "False", at, **unready),
        _condition("ContainersReady", "False", at, **unready),
        _condition("PodScheduled", "True", at),
    ]


def _container(state: dict[str, Any], *, ready: bool = False) -> list[dict[str, Any]]:
    return [
        {
            "name": "trainer",
            "image": IMAGE,
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "started": ready,
            "state": state,
        }
    ]


def pod_unschedulable(since: datetime) -> dict[str, Any]:
    """No node has a free GPU: the scheduler's PodScheduled=False condition."""
    return {
        "phase": "Pending",
        "qosClass": "Burstable",
        "conditions": [
            _condition(
                "PodScheduled",
                "False",
                since,
                reason="Unschedulable",
                message=UNSCHEDULABLE_MESSAGE,
            )
        ],
    }


def pod_waiting(reason: str, message: str, scheduled: datetime) -> dict[str, Any]:
    """Scheduled at ``scheduled``, its container waiting (ImagePullBackOff, ErrImagePull,
    CreateContainerConfigError, ContainerCreating ...)."""
    return {
        "phase": "Pending",
        "hostIP": "10.0.0.11",
        "podIP": "10.1.0.7",
        "startTime": timestamp(scheduled),
        "qosClass": "Burstable",
        "conditions": _not_ready(scheduled),
        "containerStatuses": _container({"waiting": {"reason": reason, "message": message}}),
    }


def pod_running(started: datetime) -> dict[str, Any]:
    ready = [
        _condition("PodReadyToStartContainers", "True", started),
        _condition("Initialized", "True", started),
        _condition("Ready", "True", started),
        _condition("ContainersReady", "True", started),
        _condition("PodScheduled", "True", started),
    ]
    return {
        "phase": "Running",
        "hostIP": "10.0.0.11",
        "podIP": "10.1.0.7",
        "startTime": timestamp(started),
        "qosClass": "Burstable",
        "conditions": ready,
        "containerStatuses": _container({"running": {"startedAt": timestamp(started)}}, ready=True),
    }


def pod_terminated(
    started: datetime,
    finished: datetime,
    *,
    exit_code: int,
    reason: str,
    message: str | None = None,
) -> dict[str, Any]:
    """The container ended: ``Completed`` (0), ``Error``, or ``OOMKilled`` (137)."""
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": timestamp(started),
        "finishedAt": timestamp(finished),
        "containerID": "containerd://4f1c0a7d2b9e8f6a5c3d1e0b9a8f7e6d5c4b3a2918f7e6d5c4b3a29180f7e6d5",
    }
    if message is not None:
        terminated["message"] = message
    return {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "hostIP": "10.0.0.11",
        "podIP": "10.1.0.7",
        "startTime": timestamp(started),
        "qosClass": "Burstable",
        "conditions": [
            _condition("PodReadyToStartContainers", "False", finished),
            _condition("Initialized", "True", started),
            _condition("Ready", "False", finished, reason="PodCompleted"),
            _condition("ContainersReady", "False", finished, reason="PodCompleted"),
            _condition("PodScheduled", "True", started),
        ],
        "containerStatuses": _container({"terminated": terminated}),
    }


def job_active(started: datetime) -> dict[str, Any]:
    return {
        "startTime": timestamp(started),
        "active": 1,
        "ready": 1,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    }


def job_finished(
    started: datetime, finished: datetime, *, succeeded: bool, reason: str, message: str
) -> dict[str, Any]:
    """A finished Job as a 1.31+ controller writes it (the interim condition, then the final
    one, both with the reason): Complete/CompletionsReached, Failed/BackoffLimitExceeded or
    Failed/DeadlineExceeded."""
    interim, final = (
        ("SuccessCriteriaMet", "Complete") if succeeded else ("FailureTarget", "Failed")
    )
    status: dict[str, Any] = {
        "startTime": timestamp(started),
        "active": 0,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
        "conditions": [
            _condition(interim, "True", finished, reason=reason, message=message),
            _condition(final, "True", finished, reason=reason, message=message),
        ],
    }
    if succeeded:
        status.update(succeeded=1, completionTime=timestamp(finished))
    else:
        status["failed"] = 1
    return status


def job_deadline_exceeded(started: datetime, finished: datetime) -> dict[str, Any]:
    return job_finished(
        started,
        finished,
        succeeded=False,
        reason="DeadlineExceeded",
        message="Job was active longer than specified deadline",
    )


def job_backoff_limit_exceeded(started: datetime, finished: datetime) -> dict[str, Any]:
    return job_finished(
        started,
        finished,
        succeeded=False,
        reason="BackoffLimitExceeded",
        message="Job has reached the specified backoff limit",
    )


def job_complete(started: datetime, finished: datetime) -> dict[str, Any]:
    return job_finished(
        started,
        finished,
        succeeded=True,
        reason="CompletionsReached",
        message="Reached expected number of succeeded pods",
    )
