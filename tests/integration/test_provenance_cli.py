"""The acceptance flow through the ``rai`` command: the platform key, export, download, and an
offline verify that needs only the file, the public key and the artifact."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from cli.main import main
from tests.integration.provenance_support import two_trained_versions
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.integration


async def test_export_download_and_verify_offline(
    services_env: ServicesEnv,
    db_admin_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = services_env
    p = await two_trained_versions(env)
    for name, value in {
        "RAI_DATABASE_URL": db_admin_dsn,
        "RAI_S3_ENDPOINT_URL": env.settings.s3_endpoint_url,
        "RAI_S3_ACCESS_KEY": env.settings.s3_access_key or "",
        "RAI_S3_SECRET_KEY": env.settings.s3_secret_key.get_secret_value()
        if env.settings.s3_secret_key
        else "",
        "RAI_S3_REGISTRY_BUCKET": env.settings.s3_registry_bucket,
        "RAI_S3_DATASETS_BUCKET": env.settings.s3_datasets_bucket,
        "RAI_PLATFORM_SIGNING_KEY": env.platform.seed_hex(),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAI_APP_DATABASE_URL", raising=False)
    monkeypatch.delenv("RAI_TRUSTED_PLATFORM_KEY", raising=False)

    async def rai(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, _ = await rai("keys", "platform", "--json")
    assert code == 0
    assert json.loads(out) == {
        "key_id": env.platform.key_id,
        "public_key": env.platform.public_key.hex(),
    }
    public_key = json.loads(out)["public_key"]

    bundle, artifact = tmp_path / "model.intoto.json", tmp_path / "model.json"
    tenant, model = str(p.tenant), str(p.model)
    code, out, _ = await rai(
        "provenance", "export", model, "--tenant", tenant, "--out", str(bundle), "--json"
    )
    assert code == 0
    assert json.loads(out)["subject"]["digest"]["sha256"] == hashlib.sha256(p.artifact).hexdigest()
    code, out, _ = await rai("model", "download", model, "--tenant", tenant, "--out", str(artifact))
    assert code == 0, out
    assert await asyncio.to_thread(artifact.read_bytes) == p.artifact

    # Offline: nothing but the file, the key and the artifact (the stack's settings removed).
    for name in ("RAI_S3_ACCESS_KEY", "RAI_S3_SECRET_KEY", "RAI_PLATFORM_SIGNING_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("RAI_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("RAI_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    verify = ("provenance", "verify", str(bundle), "--trusted-key", public_key)
    code, out, _ = await rai(*verify, "--artifact", str(artifact))
    assert code == 0, out
    assert out.count("ok  ") == 11
    assert out.rstrip().endswith(f"{bundle}: VERIFIED")
    key_file = tmp_path / "platform.pub"
    await asyncio.to_thread(key_file.write_text, public_key + "\n")
    code, out, _ = await rai(
        "provenance", "verify", str(bundle), "--trusted-key", str(key_file), "--json"
    )
    report = json.loads(out)
    assert (code, report["verified"], report["artifact_checked"]) == (0, True, False)
    assert report["model_version_id"] == model

    # One byte flipped in the artifact, or in the envelope: the failed line is named.
    data = bytearray(p.artifact)
    data[-1] ^= 1
    await asyncio.to_thread(artifact.write_bytes, bytes(data))
    code, out, _ = await rai(*verify, "--artifact", str(artifact))
    assert code == 1
    assert "FAIL  artifact bytes" in out
    assert out.rstrip().endswith("NOT VERIFIED (artifact bytes)")
    envelope = bytearray(await asyncio.to_thread(bundle.read_bytes))
    at = envelope.index(b'"payload": "') + 40
    envelope[at] = ord("A") if envelope[at] != ord("A") else ord("B")
    await asyncio.to_thread(bundle.write_bytes, bytes(envelope))
    code, out, _ = await rai(*verify)
    assert code == 1
    assert "FAIL  envelope signature" in out

    code, _, err = await rai(
        "provenance", "verify", str(tmp_path / "missing.json"), "--trusted-key", public_key
    )
    assert code == 3
    assert "no bundle file" in err
