"""``rai storage init`` and ``rai storage check``, driven as a user would (in-process), against
the run's private SeaweedFS."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from adapters.objectstore import ObjectStore
from cli.main import main
from settings import Settings

pytestmark = pytest.mark.e2e


def rai_storage(*argv: str) -> int:
    return main(["storage", *argv])


@pytest.fixture
def stack_env(s3_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The environment `eval "$(rai dev env)"` gives, with buckets of this test's own."""
    tag = secrets.token_hex(4)
    settings = s3_settings.model_copy(
        update={
            "s3_registry_bucket": f"cli-{tag}-registry",
            "s3_datasets_bucket": f"cli-{tag}-datasets",
        }
    )
    assert settings.s3_access_key is not None
    assert settings.s3_secret_key is not None
    for name, value in {
        "RAI_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "RAI_S3_ACCESS_KEY": settings.s3_access_key,
        "RAI_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "RAI_S3_REGISTRY_BUCKET": settings.s3_registry_bucket,
        "RAI_S3_DATASETS_BUCKET": settings.s3_datasets_bucket,
        "RAI_S3_REGION": settings.s3_region,
        "RAI_TMP_EXPIRY_DAYS": "1",
        "RAI_DATASET_RETENTION_DAYS": "365",
    }.items():
        monkeypatch.setenv(name, value)
    return settings


async def test_init_then_check(stack_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    registry, datasets = stack_env.s3_registry_bucket, stack_env.s3_datasets_bucket
    # the handlers run their own event loops: call them from a worker thread
    assert await asyncio.to_thread(rai_storage, "check") == 1
    out = capsys.readouterr().out
    assert f"FAIL  {registry} versioning: bucket {registry} does not exist" in out
    assert out.splitlines()[-1] == "14 of 14 checks FAILED"

    assert await asyncio.to_thread(rai_storage, "init") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[:12] == [
        f"{registry}: bucket: created (set now)",
        f"{registry}: versioning: Enabled (set now)",
        f"{registry}: default encryption: AES256 (set now)",
        f"{registry}: lifecycle: tmp/ expires after 1 day(s) (rule rai-expire-tmp) (set now)",
        f"{registry}: policy: denies all actions to anonymous requests"
        " (statement RaiDenyAnonymous) (set now)",
        f"{datasets}: bucket: created with Object Lock (set now)",
        f"{datasets}: versioning: Enabled (needed by Object Lock) (already)",
        f"{datasets}: object lock: Enabled (already)",
        f"{datasets}: default retention: COMPLIANCE 365 days (set now)",
        f"{datasets}: default encryption: AES256 (set now)",
        f"{datasets}: lifecycle: tmp/ expires after 1 day(s) (rule rai-expire-tmp) (set now)",
        f"{datasets}: policy: denies all actions to anonymous requests"
        " (statement RaiDenyAnonymous) (set now)",
    ]
    assert lines[12] == f"storage ready at {stack_env.s3_endpoint_url}: 10 of 12 settings set now"

    assert await asyncio.to_thread(rai_storage, "init") == 0
    again = capsys.readouterr().out.splitlines()
    assert all(line.endswith("(already)") for line in again[:12]), again
    assert again[12].endswith(": 0 of 12 settings set now")

    assert await asyncio.to_thread(rai_storage, "check") == 0
    passed = capsys.readouterr().out.splitlines()
    assert len(passed) == 15
    assert all(line.startswith("ok    ") for line in passed[:14]), passed
    checked = [line.split(": ", 1)[0].removeprefix("ok    ") for line in passed[:14]]
    assert checked == [
        f"{registry} versioning",
        f"{registry} default encryption",
        f"{registry} authenticated copy",
        f"{registry} lifecycle",
        f"{registry} policy",
        f"{registry} anonymous GET refused",
        f"{datasets} object lock",
        f"{datasets} default encryption",
        f"{datasets} locked version cannot be deleted",
        f"{datasets} retention cannot be shortened",
        f"{datasets} lifecycle",
        f"{datasets} policy",
        f"{datasets} anonymous GET refused",
        "wrongly signed request refused",
    ]
    assert passed[14] == f"all 14 checks passed at {stack_env.s3_endpoint_url}"

    async with ObjectStore.from_settings(stack_env) as store:
        await store.client.delete_bucket_policy(Bucket=registry)
    assert await asyncio.to_thread(rai_storage, "check") == 1
    broken = capsys.readouterr().out.splitlines()
    assert [line for line in broken if line.startswith("FAIL")] == [
        f"FAIL  {registry} policy: no policy statement denies s3:* on the bucket and its objects"
        ' to anonymous requests (Principal "*", Condition Null aws:userid)'
    ]
    assert broken[-1] == "1 of 14 checks FAILED"


def test_missing_credentials_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RAI_S3_ACCESS_KEY", raising=False)
    monkeypatch.delenv("RAI_S3_SECRET_KEY", raising=False)
    for command in ("init", "check"):
        assert rai_storage(command) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            "rai: error: S3 credentials are not set (RAI_S3_ACCESS_KEY and RAI_S3_SECRET_KEY);"
            ' for the local stack: `rai dev up`, then `eval "$(rai dev env)"`\n'
        )


def test_an_unreachable_endpoint_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAI_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("RAI_S3_ACCESS_KEY", "RAIANYKEY")
    monkeypatch.setenv("RAI_S3_SECRET_KEY", "any-secret")
    assert rai_storage("check") == 4  # a required service is unreachable
    err = capsys.readouterr().err
    assert err.startswith("rai: error: cannot reach S3 at http://127.0.0.1:1 (")
    assert err.endswith('is the stack up? `rai dev up`, then `eval "$(rai dev env)"`\n')
    assert err.count("\n") == 1


async def test_wrong_credentials_are_one_line(
    stack_env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAI_S3_SECRET_KEY", "not-the-secret")
    assert await asyncio.to_thread(rai_storage, "init") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"rai: error: S3 at {stack_env.s3_endpoint_url} refuses the key ")
    assert "SignatureDoesNotMatch" in err
    assert "not-the-secret" not in err
    assert err.count("\n") == 1
