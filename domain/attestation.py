"""The provenance attestation of a model version: an in-toto Statement v1 in a DSSE envelope,
and its offline verification.

The statement's subject is the model artifact (its version-pinned S3 URI and SHA-256). The
predicate (type :data:`PREDICATE_TYPE`) carries every record the provenance rests on, each in the
form it was signed or hashed in, so a reader with only the file and the platform's public key
can recompute everything:

``modelVersion``
    the signed model document (``domain.documents.ModelVersionDocument``), its key id and
    signature (base64), and its status when exported.
``training``
    the training run in SLSA provenance v1 shape (``buildDefinition`` with ``buildType``,
    ``externalParameters``, ``internalParameters``, ``resolvedDependencies``; ``runDetails`` with
    ``builder`` and ``metadata.invocationId/startedOn/finishedOn``), or null when the version
    was registered without one. The trainer's image is not recorded by the platform; the builder
    version names the artifact format the trainer wrote (from the signed metrics).
``dataset``
    the snapshot: URI, S3 version id, SHA-256, rows written (from the audit chain's
    ``dataset.snapshot`` decision), and the train/holdout row counts the trainer reported.
``driftReport``
    id, URI, SHA-256, verdict, per-feature figures (the whole signed report) and signature.
``biasAudit``
    id, SHA-256, result, the signed audit document and signature.
``lineage``
    every ancestor from the parent to the root, each as its signed model document (lineage
    hash, artifact and dataset digests) with key id and signature.
``statusHistory``
    every status move (from, to, time, reason).
``auditChain``
    the integrity-chain position of each decision about this version (``decisions``: seq,
    type, subject, outcome, row hash), the chain's rows from the first decision to a signed
    checkpoint with the exact text each row hash covers (``rows``), and that checkpoint
    (a signed note, :mod:`domain.checkpoint`).

:func:`verify_attestation` needs no database, object store or network.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.canonical import CanonicalJsonError, canonical_json, canonical_sha256, sha256_hex
from domain.checkpoint import CheckpointError, parse_checkpoint
from domain.checks import Check
from domain.dsse import DsseError, Envelope, parse_envelope, sign_envelope, verify_envelope
from domain.lineage import LineageError, lineage_hash
from domain.signing import DocumentKind, Signer, verify
from domain.trust import TrustedKeys

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "urn:rai-level-d:model-provenance:v1"
BUILD_TYPE = "urn:rai-level-d:training-job:v1"
BUILDER_ID = "urn:rai-level-d:trainer"


@dataclass(frozen=True)
class SignedDocument:
    document: dict[str, Any]
    key_id: str
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "document": self.document,
            "keyId": self.key_id,
            "signature": _b64(self.signature),
        }


@dataclass(frozen=True)
class TrainingRun:
    id: UUID
    workflow_id: str
    job_name: str | None
    status: str
    model_name: str | None
    fencing_token: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class DriftReport:
    id: UUID
    uri: str
    sha256: str
    report: dict[str, Any]
    key_id: str
    signature: bytes


@dataclass(frozen=True)
class BiasAudit:
    id: UUID
    sha256: str
    created_at: datetime
    signed: SignedDocument


@dataclass(frozen=True)
class StatusChange:
    from_status: str | None
    to_status: str
    at: datetime
    reason: str | None


@dataclass(frozen=True)
class ChainEntry:
    """One row of the audit chain: ``row_hash = sha256(prev_hash || canonical)``."""

    seq: int
    prev_hash: str
    row_hash: str
    canonical: str


@dataclass(frozen=True)
class ProvenanceRecords:
    tenant_id: UUID
    model: SignedDocument
    status: str
    ancestors: Sequence[SignedDocument]
    training: TrainingRun | None
    dataset_version_id: str | None
    dataset_rows: int | None
    drift: DriftReport | None
    audit: BiasAudit | None
    history: Sequence[StatusChange]
    decisions: Sequence[ChainEntry]
    chain: Sequence[ChainEntry]
    checkpoint: bytes


def build_statement(records: ProvenanceRecords) -> dict[str, Any]:
    model = records.model.document
    metrics = model.get("metrics") or {}
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": model["artifact_uri"], "digest": {"sha256": model["artifact_sha256"]}}
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "tenantId": str(records.tenant_id),
            "modelVersion": {**records.model.to_json(), "status": records.status},
            "training": _training(records.training, model, metrics),
            "dataset": {
                "uri": model["dataset_uri"],
                "s3VersionId": records.dataset_version_id,
                "digest": {"sha256": model["dataset_sha256"]},
                "rows": records.dataset_rows,
                "trainRows": metrics.get("n_train"),
                "holdoutRows": metrics.get("n_validation"),
            },
            "driftReport": _drift(records.drift),
            "biasAudit": _audit(records.audit),
            "lineage": [ancestor.to_json() for ancestor in records.ancestors],
            "statusHistory": [
                {
                    "from": change.from_status,
                    "to": change.to_status,
                    "at": _time(change.at),
                    "reason": change.reason,
                }
                for change in records.history
            ],
            "auditChain": {
                "decisions": [_decision(entry) for entry in records.decisions],
                "rows": [
                    {
                        "seq": entry.seq,
                        "prevHash": entry.prev_hash,
                        "rowHash": entry.row_hash,
                        "canonical": entry.canonical,
                    }
                    for entry in records.chain
                ],
                "checkpoint": records.checkpoint.decode("utf-8"),
            },
        },
    }


def sign_statement(signer: Signer, statement: Mapping[str, Any]) -> Envelope:
    return sign_envelope(signer, PAYLOAD_TYPE, canonical_json(statement))


def _training(
    run: TrainingRun | None, model: Mapping[str, Any], metrics: Mapping[str, Any]
) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "modelName": model["model_name"],
                "dataset": {"uri": model["dataset_uri"]},
                "l2Lambda": metrics.get("l2_lambda"),
            },
            "internalParameters": {
                "trainingRunId": str(run.id),
                "workflowId": run.workflow_id,
                "fencingToken": run.fencing_token,
            },
            "resolvedDependencies": [
                {
                    "name": "dataset-snapshot",
                    "uri": model["dataset_uri"],
                    "digest": {"sha256": model["dataset_sha256"]},
                }
            ],
        },
        "runDetails": {
            "builder": {
                "id": BUILDER_ID,
                "version": {"modelFormat": metrics.get("model_format")},
            },
            "metadata": {
                "invocationId": str(run.id),
                "startedOn": _time(run.started_at),
                "finishedOn": _time(run.finished_at),
            },
            "byproducts": [{"name": "job", "annotations": {"jobName": run.job_name}}],
        },
        "status": run.status,
        "queuedOn": _time(run.created_at),
    }


def _drift(report: DriftReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "id": str(report.id),
        "uri": report.uri,
        "digest": {"sha256": report.sha256},
        "verdict": (report.report.get("result") or {}).get("verdict"),
        "report": report.report,
        "keyId": report.key_id,
        "signature": _b64(report.signature),
    }


def _audit(audit: BiasAudit | None) -> dict[str, Any] | None:
    if audit is None:
        return None
    return {
        "id": str(audit.id),
        "digest": {"sha256": audit.sha256},
        "result": "PASSED" if audit.signed.document.get("passed") else "FAILED",
        "createdAt": _time(audit.created_at),
        **audit.signed.to_json(),
    }


def _decision(entry: ChainEntry) -> dict[str, Any]:
    row = json.loads(entry.canonical)
    return {
        "seq": entry.seq,
        "checkType": row["check_type"],
        "subjectId": row["subject_id"],
        "outcome": row["outcome"],
        "rowHash": entry.row_hash,
    }


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode("ascii")


# -- offline verification ---------------------------------------------------------------------


class _Failed(Exception):
    """One checklist line failed (its detail is the message)."""


@dataclass(frozen=True)
class AttestationReport:
    checks: tuple[Check, ...]
    model_version_id: str | None

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def verify_attestation(
    envelope_bytes: bytes,
    trusted: TrustedKeys,
    *,
    artifact_sha256: str | None = None,
    dataset_sha256: str | None = None,
) -> AttestationReport:
    """The offline checklist. ``artifact_sha256`` / ``dataset_sha256``: the SHA-256 of bytes
    the verifier holds, compared with the subject and the dataset snapshot when given."""
    checks: list[Check] = []
    try:
        envelope = parse_envelope(envelope_bytes)
    except DsseError as exc:
        failed = Check("envelope signature", False, f"not a DSSE envelope: {exc}")
        return AttestationReport((failed,), None)
    verdict = verify_envelope(envelope, trusted)
    if not verdict.ok:
        checks.append(Check("envelope signature", False, verdict.problem or "not verified"))
        # Nothing inside an unverified envelope is worth reading.
        return AttestationReport(tuple(checks), None)
    if envelope.payload_type != PAYLOAD_TYPE:
        checks.append(
            Check("envelope signature", False, f"payloadType is {envelope.payload_type!r}")
        )
        return AttestationReport(tuple(checks), None)
    checks.append(Check("envelope signature", True, f"DSSE, signed by trusted key {verdict.keyid}"))
    try:
        statement = json.loads(envelope.payload)
        predicate, subject_sha = _statement(statement)
        model = predicate["modelVersion"]["document"]
    except (_Failed, ValueError, KeyError, TypeError) as exc:
        checks.append(Check("statement", False, _reason(exc)))
        return AttestationReport(tuple(checks), None)
    checks.append(Check("statement", True, f"in-toto v1, subject sha256 {subject_sha}"))
    lines: list[tuple[str, Callable[[], str]]] = [
        ("model signature", lambda: _model(predicate, subject_sha, trusted)),
        ("lineage chain", lambda: _lineage(predicate, trusted)),
        ("status history", lambda: _history(predicate)),
        ("training run", lambda: _training_run(predicate)),
        ("dataset snapshot", lambda: _dataset(predicate)),
        ("drift report", lambda: _drift_report(predicate, trusted)),
        ("bias audit", lambda: _bias_audit(predicate, trusted)),
        ("audit chain", lambda: _audit_chain(predicate, subject_sha, trusted)),
    ]
    if artifact_sha256 is not None:
        lines.append(("artifact bytes", lambda: _bytes("artifact", artifact_sha256, subject_sha)))
    if dataset_sha256 is not None:
        lines.append(
            ("dataset bytes", lambda: _bytes("dataset", dataset_sha256, model["dataset_sha256"]))
        )
    for name, run in lines:
        try:
            checks.append(Check(name, True, run()))
        except (_Failed, ValueError, KeyError, TypeError, AttributeError) as exc:
            checks.append(Check(name, False, _reason(exc)))
    return AttestationReport(tuple(checks), str(model.get("id")))


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"the bundle lacks the field {exc}"
    if isinstance(exc, TypeError | AttributeError):
        return f"a field of the bundle has the wrong type ({exc})"
    return str(exc)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise _Failed(message)


def _statement(statement: Any) -> tuple[dict[str, Any], str]:
    _require(isinstance(statement, dict), "the payload is not a JSON object")
    _require(statement.get("_type") == STATEMENT_TYPE, f"_type is not {STATEMENT_TYPE}")
    _require(
        statement.get("predicateType") == PREDICATE_TYPE,
        f"predicateType is not {PREDICATE_TYPE}",
    )
    subjects = statement.get("subject")
    _require(isinstance(subjects, list) and len(subjects) == 1, "expected exactly one subject")
    sha = subjects[0]["digest"]["sha256"]
    _require(isinstance(sha, str) and len(sha) == 64, "the subject has no sha256 digest")
    predicate = statement["predicate"]
    _require(isinstance(predicate, dict), "the predicate is not an object")
    return predicate, sha


def _signed(section: Mapping[str, Any], kind: DocumentKind, trusted: TrustedKeys) -> None:
    key_id = section["keyId"]
    public_key = trusted.get(key_id)
    if public_key is None:
        raise _Failed(f"signed by key {key_id}, not a trusted platform key")
    try:
        signature = base64.b64decode(section["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise _Failed("the signature is not base64") from None
    document = section["document"] if kind is not DocumentKind.DRIFT_REPORT else section["report"]
    _require(
        verify(public_key, kind, document, signature),
        f"the {kind.value} signature does not verify with key {key_id}",
    )


def _model(predicate: Mapping[str, Any], subject_sha: str, trusted: TrustedKeys) -> str:
    section = predicate["modelVersion"]
    model = section["document"]
    _signed(section, DocumentKind.MODEL_VERSION, trusted)
    _require(
        model["artifact_sha256"] == subject_sha,
        f"the signed model names artifact {model['artifact_sha256']}, the subject {subject_sha}",
    )
    _require(model["tenant_id"] == predicate["tenantId"], "the model is another tenant's")
    return f"{model['model_name']} v{model['version']} ({model['id']}), {section['status']}"


def _lineage(predicate: Mapping[str, Any], trusted: TrustedKeys) -> str:
    nodes = [predicate["modelVersion"], *predicate["lineage"]]
    for index, section in enumerate(nodes):
        node = section["document"]
        parent = nodes[index + 1]["document"] if index + 1 < len(nodes) else None
        if index > 0:
            _signed(section, DocumentKind.MODEL_VERSION, trusted)
        _require(
            node["parent_version_id"] == (parent["id"] if parent else None),
            f"version {node['id']} names parent {node['parent_version_id']}, the bundle"
            f" {'has ' + str(parent['id']) if parent else 'ends there'}",
        )
        try:
            expected = lineage_hash(
                parent["lineage_hash"] if parent else None,
                node["artifact_sha256"],
                node["dataset_sha256"],
            )
        except LineageError as exc:
            raise _Failed(f"version {node['id']}: {exc}") from None
        _require(
            node["lineage_hash"] == expected,
            f"lineage hash of version {node['id']} is {node['lineage_hash']}, recomputed"
            f" {expected}",
        )
    return f"{len(nodes)} version(s) to the root, every lineage hash recomputed"


def _history(predicate: Mapping[str, Any]) -> str:
    history = predicate["statusHistory"]
    _require(bool(history), "no status history")
    previous = None
    for change in history:
        _require(
            change["from"] == previous,
            f"the move to {change['to']} starts from {change['from']}, not {previous}",
        )
        previous = change["to"]
    status = predicate["modelVersion"]["status"]
    _require(previous == status, f"the history ends {previous}, the version is {status}")
    return " -> ".join(change["to"] for change in history)


def _training_run(predicate: Mapping[str, Any]) -> str:
    model = predicate["modelVersion"]["document"]
    training = predicate["training"]
    if training is None:
        _require(model["training_run_id"] is None, "the signed model names a training run")
        return "none recorded (registered without a training run)"
    invocation = training["runDetails"]["metadata"]["invocationId"]
    _require(
        invocation == model["training_run_id"],
        f"run {invocation} is not the signed model's run {model['training_run_id']}",
    )
    dependency = training["buildDefinition"]["resolvedDependencies"][0]
    _require(
        dependency["digest"]["sha256"] == model["dataset_sha256"],
        "the run's dataset digest differs from the signed model's",
    )
    metadata = training["runDetails"]["metadata"]
    return f"{invocation} {training['status']}, {metadata['startedOn']} .. {metadata['finishedOn']}"


def _dataset(predicate: Mapping[str, Any]) -> str:
    model = predicate["modelVersion"]["document"]
    dataset = predicate["dataset"]
    _require(dataset["uri"] == model["dataset_uri"], "the dataset URI differs from the model's")
    _require(
        dataset["digest"]["sha256"] == model["dataset_sha256"],
        "the dataset digest differs from the signed model's",
    )
    rows = dataset["rows"]
    return (
        f"{dataset['digest']['sha256']}, {rows if rows is not None else 'unknown'} rows"
        f" (train {dataset['trainRows']}, holdout {dataset['holdoutRows']})"
    )


def _drift_report(predicate: Mapping[str, Any], trusted: TrustedKeys) -> str:
    model = predicate["modelVersion"]["document"]
    drift = predicate["driftReport"]
    if drift is None:
        _require(model["drift_report_id"] is None, "the signed model names a drift report")
        return "none linked to this version"
    _require(drift["id"] == model["drift_report_id"], "not the signed model's drift report")
    try:
        body = canonical_json(drift["report"])
    except CanonicalJsonError as exc:
        raise _Failed(f"the report has no canonical form: {exc}") from None
    _require(
        sha256_hex(body) == drift["digest"]["sha256"],
        "the report does not hash to its recorded sha256",
    )
    _signed(drift, DocumentKind.DRIFT_REPORT, trusted)
    _require(drift["report"]["id"] == drift["id"], "the report's id differs")
    verdict = drift["report"]["result"]["verdict"]
    _require(drift["verdict"] == verdict, f"verdict {drift['verdict']}, the report says {verdict}")
    features = drift["report"]["result"].get("features") or []
    return f"{drift['id']} signed, verdict {verdict}, {len(features)} feature(s)"


def _bias_audit(predicate: Mapping[str, Any], trusted: TrustedKeys) -> str:
    model = predicate["modelVersion"]["document"]
    audit = predicate["biasAudit"]
    _require(audit is not None, "this version has no bias audit")
    document = audit["document"]
    _require(document["model_version_id"] == model["id"], "the audit is of another version")
    _require(document["id"] == audit["id"], "the audit's id differs")
    _require(
        canonical_sha256(document) == audit["digest"]["sha256"],
        "the audit does not hash to its recorded sha256",
    )
    _signed(audit, DocumentKind.BIAS_AUDIT, trusted)
    result = "PASSED" if document["passed"] else "FAILED"
    _require(audit["result"] == result, f"result {audit['result']}, the signed audit says {result}")
    return f"{audit['id']} signed, {result}"


def _audit_chain(predicate: Mapping[str, Any], subject_sha: str, trusted: TrustedKeys) -> str:
    chain = predicate["auditChain"]
    tenant = predicate["tenantId"]
    rows = chain["rows"]
    by_seq: dict[int, dict[str, Any]] = {}
    previous: Mapping[str, Any] | None = None
    for row in rows:
        seq = row["seq"]
        if previous is not None:
            _require(seq == previous["seq"] + 1, f"seq {previous['seq'] + 1} is missing")
            _require(row["prevHash"] == previous["rowHash"], f"seq {seq}: broken link")
        _require(
            sha256_hex((row["prevHash"] + row["canonical"]).encode("utf-8")) == row["rowHash"],
            f"seq {seq}: the row does not hash to its row hash",
        )
        content = json.loads(row["canonical"])
        _require(
            content["seq"] == seq and content["tenant_id"] == tenant,
            f"seq {seq}: the row is of another position or tenant",
        )
        by_seq[seq] = content
        previous = row
    if previous is None:
        raise _Failed("no chain rows")
    try:
        checkpoint, _ = parse_checkpoint(chain["checkpoint"].encode("utf-8"), trusted)
    except CheckpointError as exc:
        raise _Failed(f"checkpoint: {exc}") from None
    _require(str(checkpoint.tenant_id) == tenant, "the checkpoint is of another tenant's chain")
    _require(
        checkpoint.size == previous["seq"] and checkpoint.head_hash == previous["rowHash"],
        f"the rows end at seq {previous['seq']}, the checkpoint signed seq {checkpoint.size}"
        f" with another head",
    )
    decisions = chain["decisions"]
    _require(bool(decisions), "no decision about this version is in the chain")
    row_hashes = {row["seq"]: row["rowHash"] for row in rows}
    for decision in decisions:
        seq = decision["seq"]
        content = by_seq.get(seq)
        if content is None:
            raise _Failed(f"decision seq {seq} is outside the rows")
        _require(
            row_hashes[seq] == decision["rowHash"]
            and (content["check_type"], content["subject_id"], content["outcome"])
            == (decision["checkType"], decision["subjectId"], decision["outcome"]),
            f"decision seq {seq} differs from the chain's row",
        )
        _cross_check(content, predicate, subject_sha)
    return (
        f"{len(decisions)} decision(s) at seq {', '.join(str(d['seq']) for d in decisions)};"
        f" {len(rows)} row(s) recomputed to {checkpoint.describe()}"
    )


def _cross_check(row: Mapping[str, Any], predicate: Mapping[str, Any], subject_sha: str) -> None:
    """A decision's recorded details agree with the bundle's records."""
    model = predicate["modelVersion"]["document"]
    details = row["details"]
    kind, seq = row["check_type"], row["seq"]
    if kind == "model.registered":
        _require(
            details.get("artifact_sha256") == subject_sha
            and details.get("lineage_hash") == model["lineage_hash"],
            f"seq {seq}: the registration recorded other digests",
        )
    elif kind == "model.bias_audit" and predicate["biasAudit"] is not None:
        audit = predicate["biasAudit"]
        if details.get("audit_id") == audit["id"]:
            _require(row["outcome"] == audit["result"], f"seq {seq}: the audit outcome differs")
    elif kind == "drift.report":
        drift = predicate["driftReport"]
        _require(
            drift is not None and details.get("report_sha256") == drift["digest"]["sha256"],
            f"seq {seq}: the drift report recorded another digest",
        )
    elif kind == "dataset.snapshot":
        _require(
            details.get("sha256") == model["dataset_sha256"],
            f"seq {seq}: the snapshot recorded another digest",
        )


def _bytes(what: str, actual: str, expected: str) -> str:
    _require(actual == expected, f"the {what} file hashes to {actual}, the bundle says {expected}")
    return f"{actual} matches"
