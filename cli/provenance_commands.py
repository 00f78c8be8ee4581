"""``rai provenance export | verify``: provenance a third party can check with only a file and
the platform's public key.

``export`` signs the attestation bundle of a model version (a DSSE envelope over an in-toto
Statement, ``domain.attestation``); ``verify`` checks such a file with no database, no object
store and no network (only ``export`` imports the exporter and its S3 client). The artifact to
check a bundle with comes from ``rai model download``.

Exit codes: 0 ok; 1 a check failed (verify names the failed line); 2 usage; 3 not found (the
model version, or a file given); 4 Postgres or S3 unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import (
    app_database,
    checkpoint_service,
    object_store,
    parse_model_id,
    parse_tenant,
    platform_signer,
    trusted_keys,
)
from cli.errors import CommandError, NotFound
from cli.output import add_json_flag, print_json
from domain.attestation import verify_attestation
from domain.trust import TrustedKeys
from services.trust import TrustConfigError, trusted_keys_from_file_or_hex
from settings import Settings

if TYPE_CHECKING:
    from domain.dsse import Envelope


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


def _trusted_key(value: str) -> TrustedKeys:
    try:
        return trusted_keys_from_file_or_hex(value)
    except TrustConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: `rai provenance verify` needs neither S3's client nor the database.
    from services.provenance import ProvenanceExporter

    trusted = trusted_keys(settings)
    platform = platform_signer(settings, trusted)

    async def export() -> Envelope:
        async with app_database(settings) as db, object_store(settings) as store:
            checkpoints = checkpoint_service(settings, db, store, trusted, platform)
            exporter = ProvenanceExporter(db, store, platform, trusted, checkpoints)
            return await exporter.export(args.tenant, args.model_version_id)

    envelope = asyncio.run(export())
    data = envelope.to_json()
    _write_atomically(args.out, data)
    subject = _subject(envelope)
    if args.json:
        print_json(
            {
                "out": args.out,
                "model_version_id": args.model_version_id,
                "tenant_id": args.tenant,
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
                "file": args.file,
                "model_version_id": report.model_version_id,
                "verified": report.ok,
                "checks": report.checks,
                "artifact_checked": artifact is not None,
                "dataset_checked": dataset is not None,
            }
        )
        return 0 if report.ok else 1
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
    return 0 if not failed else 1


def _subject(envelope: Envelope) -> dict[str, Any]:
    subject: dict[str, Any] = json.loads(envelope.payload)["subject"][0]
    return subject


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no {what} file {path}") from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc


def _sha256_of(path: Path, what: str) -> str:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        raise NotFound(f"no {what} file {path}") from None
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
