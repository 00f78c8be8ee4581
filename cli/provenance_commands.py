"""``rai provenance export | verify`` and ``rai model download``: provenance a third party can
check with only a file and the platform's public key.

``export`` signs the attestation bundle of a model version (a DSSE envelope over an in-toto
Statement, ``domain.attestation``); ``verify`` checks such a file with no database, no object
store and no network; ``rai model download`` fetches the artifact at its pinned S3 version and
checks its hash against the signed record.

Exit codes: 0 ok; 1 a check failed (verify names the failed line); 2 usage; 3 not found (the
model version, or a file given); 4 Postgres or S3 unreachable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from adapters.objectstore import ObjectStore, ObjectStoreConfigError
from cli.audit_commands import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    add_json_flag,
    audit_services,
    print_json,
    run_async,
)
from cli.common import open_app_database, parse_model_id, parse_tenant
from cli.errors import CommandError
from domain.attestation import verify_attestation
from domain.dsse import Envelope
from domain.trust import TrustedKeys
from services.errors import GovernanceRefusal, NotFoundError
from services.keys import PlatformKeyError, load_platform_signer
from services.provenance import DownloadedArtifact, ProvenanceExporter, download_artifact
from services.trust import TrustConfigError, trusted_keys_from_file_or_hex, trusted_platform_keys
from settings import Settings


def register(groups: Any) -> None:
    parser = groups.add_parser(
        "provenance", help="attestation bundles: export (signed), verify (offline)"
    )
    commands = parser.add_subparsers(dest="provenance_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "export",
        help="write a model version's provenance as a signed DSSE envelope (in-toto Statement);"
        " refuses a version that does not verify",
    )
    p.add_argument("model_version_id", type=parse_model_id, metavar="MODEL_VERSION_ID")
    p.add_argument("--tenant", required=True, type=parse_tenant, help="tenant id (UUID)")
    p.add_argument("--out", required=True, type=Path, help="file to write the envelope to")
    add_json_flag(p)
    p.set_defaults(handler=run_export)

    p = commands.add_parser(
        "verify",
        help="check an exported bundle offline (no database, no S3, no network) against a"
        " pinned platform key; exit 1 naming the failed line",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the exported envelope")
    p.add_argument(
        "--trusted-key",
        required=True,
        type=_trusted_key,
        metavar="HEX|PATH",
        help="the platform's Ed25519 public key in hex (`rai keys platform --json`), or a file"
        " holding it",
    )
    p.add_argument("--artifact", type=Path, help="the model artifact's bytes, to hash")
    p.add_argument("--dataset", type=Path, help="the dataset snapshot's bytes, to hash")
    add_json_flag(p)
    p.set_defaults(handler=run_verify)


def register_download(commands: Any) -> None:
    """``rai model download`` (registered by ``model_commands``)."""
    p = commands.add_parser(
        "download",
        help="fetch a model version's artifact at its pinned S3 version; kept only if it hashes"
        " to the signed record",
    )
    p.add_argument("model_version_id", type=parse_model_id, metavar="MODEL_VERSION_ID")
    p.add_argument("--tenant", required=True, type=parse_tenant, help="tenant id (UUID)")
    p.add_argument("--out", required=True, type=Path, help="where to write the artifact")
    add_json_flag(p)
    p.set_defaults(handler=run_download)


def _trusted_key(value: str) -> TrustedKeys:
    try:
        return trusted_keys_from_file_or_hex(value)
    except TrustConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    try:
        platform = load_platform_signer(settings)
        trusted = trusted_platform_keys(settings)
    except (PlatformKeyError, TrustConfigError) as exc:
        raise CommandError(str(exc)) from exc

    async def export() -> Envelope:
        async with audit_services(settings, sign=True) as services:
            exporter = ProvenanceExporter(
                services.db, services.store, platform, trusted, services.checkpoints
            )
            return await exporter.export(args.tenant, args.model_version_id)

    try:
        envelope = run_async(export, settings)
    except NotFoundError as exc:
        raise CommandError(str(exc), exit_code=EXIT_NOT_FOUND) from exc
    except GovernanceRefusal as exc:
        raise CommandError(str(exc)) from exc
    data = envelope.to_json()
    _write_atomically(args.out, data)
    subject = _subject(envelope)
    if args.json:
        print_json(
            {
                "out": str(args.out),
                "model_version_id": str(args.model_version_id),
                "tenant_id": str(args.tenant),
                "payload_type": envelope.payload_type,
                "subject": subject,
                "key_id": platform.key_id,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        return 0
    print(f"wrote          {args.out} ({len(data)} bytes, DSSE envelope, in-toto Statement v1)")
    print(f"subject        {subject['name']}")
    print(f"artifact       sha256 {subject['digest']['sha256']}")
    print(f"signed by      platform key {platform.key_id}")
    print(
        f"verify with    rai provenance verify {args.out} --trusted-key"
        f" {platform.public_key.hex()} [--artifact FILE]"
    )
    return 0


def run_verify(args: argparse.Namespace, settings: Settings) -> int:
    envelope = _read(args.file, "bundle")
    artifact = _sha256_of(args.artifact, "artifact") if args.artifact else None
    dataset = _sha256_of(args.dataset, "dataset") if args.dataset else None
    report = verify_attestation(
        envelope, args.trusted_key, artifact_sha256=artifact, dataset_sha256=dataset
    )
    if args.json:
        print_json(
            {
                "file": str(args.file),
                "model_version_id": report.model_version_id,
                "verified": report.ok,
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in report.checks],
                "artifact_checked": artifact is not None,
                "dataset_checked": dataset is not None,
            }
        )
        return 0 if report.ok else EXIT_FAILED
    width = max(len(check.name) for check in report.checks)
    for check in report.checks:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name.ljust(width)}  {check.detail}")
    unchecked = [
        flag for flag, given in (("--artifact", artifact), ("--dataset", dataset)) if not given
    ]
    if unchecked and report.ok:
        print(f"note  bytes not checked: no {' / '.join(unchecked)} given")
    failed = [check.name for check in report.checks if not check.ok]
    state = "VERIFIED" if not failed else f"NOT VERIFIED ({', '.join(failed)})"
    print(f"{args.file}: {state}")
    return 0 if not failed else EXIT_FAILED


def run_download(args: argparse.Namespace, settings: Settings) -> int:
    try:
        trusted = trusted_platform_keys(settings)
        store = ObjectStore.from_settings(settings)
    except (TrustConfigError, ObjectStoreConfigError) as exc:
        raise CommandError(str(exc)) from exc
    if args.out.is_dir():
        raise CommandError(f"--out {args.out} is a directory; name the file to write")

    async def download() -> DownloadedArtifact:
        db = await open_app_database(settings)
        try:
            async with store:
                return await download_artifact(
                    db, store, trusted, args.tenant, args.model_version_id, args.out
                )
        finally:
            await db.close()

    try:
        done = run_async(download, settings)
    except NotFoundError as exc:
        raise CommandError(str(exc), exit_code=EXIT_NOT_FOUND) from exc
    except GovernanceRefusal as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print_json(
            {
                "out": str(done.path),
                "model_version_id": str(args.model_version_id),
                "artifact_uri": done.artifact_uri,
                "sha256": done.sha256,
                "size": done.size,
            }
        )
        return 0
    print(f"wrote     {done.path} ({done.size} bytes)")
    print(f"from      {done.artifact_uri}")
    print(f"sha256    {done.sha256} (matches the signed record)")
    return 0


def _subject(envelope: Envelope) -> dict[str, Any]:
    subject: dict[str, Any] = json.loads(envelope.payload)["subject"][0]
    return subject


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CommandError(f"no {what} file {path}", exit_code=EXIT_NOT_FOUND) from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc


def _sha256_of(path: Path, what: str) -> str:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        raise CommandError(f"no {what} file {path}", exit_code=EXIT_NOT_FOUND) from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with temporary.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CommandError(f"cannot write {path}: {exc}") from exc
