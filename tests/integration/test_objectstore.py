"""The object store against a real S3 server (the run's private SeaweedFS)."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from adapters import objectstore
from adapters.objectstore import (
    AccessDeniedError,
    CredentialsRejectedError,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreConfigError,
    ObjectStoreError,
    ObjectStoreUnavailableError,
    Retention,
    S3Uri,
)
from adapters.storage_setup import init_storage
from settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def configured(s3_settings: Settings) -> Settings:
    """Settings naming a registry and a datasets bucket of this module, initialised."""
    tag = secrets.token_hex(4)
    settings = s3_settings.model_copy(
        update={"s3_registry_bucket": f"os-{tag}-registry", "s3_datasets_bucket": f"os-{tag}-data"}
    )
    async with ObjectStore.from_settings(settings) as store:
        await init_storage(store, settings)
    return settings


@pytest.fixture
async def store(configured: Settings) -> AsyncIterator[ObjectStore]:
    async with ObjectStore.from_settings(configured) as opened:
        yield opened


def fresh_key(name: str = "object") -> str:
    return f"tests/{secrets.token_hex(6)}/{name}"


async def test_put_head_get_round_trip(store: ObjectStore, configured: Settings) -> None:
    bucket = configured.s3_registry_bucket
    key = fresh_key("report.json")
    body = b'{"psi": 0.12}'
    stored = await store.put_bytes(
        bucket,
        key,
        body,
        content_type="application/json",
        metadata={"sha256": hashlib.sha256(body).hexdigest(), "Tenant": "north"},
    )
    assert stored.version_id
    assert stored.etag == hashlib.md5(body, usedforsecurity=False).hexdigest()
    assert stored.sse_algorithm == "AES256"
    assert stored.uri == S3Uri(bucket, key, stored.version_id)

    info = await store.head(bucket, key)
    assert info is not None
    assert info.version_id == stored.version_id
    assert info.size == len(body)
    assert info.etag == stored.etag
    assert info.content_type == "application/json"
    assert info.metadata == {"sha256": hashlib.sha256(body).hexdigest(), "tenant": "north"}
    assert info.sse_algorithm == "AES256"
    assert info.retention is None
    assert info.last_modified is not None
    assert abs(info.last_modified - datetime.now(UTC)) < timedelta(minutes=5)
    assert await store.get_bytes(bucket, key) == body


async def test_versions_stay_addressable(store: ObjectStore, configured: Settings) -> None:
    bucket, key = configured.s3_registry_bucket, fresh_key()
    first = await store.put_bytes(bucket, key, b"first")
    second = await store.put_bytes(bucket, key, b"second")
    assert first.version_id != second.version_id
    assert first.version_id is not None
    assert await store.get_bytes(bucket, key) == b"second"
    assert await store.get_bytes(bucket, key, first.version_id) == b"first"
    old = await store.head(bucket, key, first.version_id)
    assert old is not None
    assert old.size == len(b"first")

    await store.delete_version(bucket, key, first.version_id)
    assert await store.head(bucket, key, first.version_id) is None
    with pytest.raises(ObjectNotFoundError):
        await store.get_bytes(bucket, key, first.version_id)
    assert await store.get_bytes(bucket, key) == b"second"


async def test_stream_sha256_of_a_multi_megabyte_object(
    store: ObjectStore, configured: Settings
) -> None:
    bucket, key = configured.s3_registry_bucket, fresh_key("model.bin")
    data = secrets.token_bytes(7 * 1024 * 1024 + 123)
    stored = await store.put_bytes(bucket, key, data)
    digest = await store.stream_sha256(bucket, key, stored.version_id)
    assert digest.sha256_hex == hashlib.sha256(data).hexdigest()
    assert digest.size == len(data)
    assert digest.version_id == stored.version_id
    assert digest.etag  # multipart-free PUT: the MD5 of the bytes
    # the latest version, without naming one
    latest = await store.stream_sha256(bucket, key)
    assert (latest.sha256_hex, latest.size) == (digest.sha256_hex, digest.size)


async def test_stream_sha256_of_an_empty_object(store: ObjectStore, configured: Settings) -> None:
    bucket, key = configured.s3_registry_bucket, fresh_key("empty")
    await store.put_bytes(bucket, key, b"")
    digest = await store.stream_sha256(bucket, key)
    assert (digest.sha256_hex, digest.size) == (hashlib.sha256(b"").hexdigest(), 0)


async def test_missing_objects_and_versions(store: ObjectStore, configured: Settings) -> None:
    bucket = configured.s3_registry_bucket
    assert await store.head(bucket, fresh_key("never-written")) is None
    assert await store.head(f"no-such-bucket-{secrets.token_hex(4)}", "key") is None
    with pytest.raises(ObjectNotFoundError):
        await store.get_bytes(bucket, fresh_key("never-written"))
    with pytest.raises(ObjectNotFoundError):
        await store.stream_sha256(bucket, fresh_key("never-written"))

    key = fresh_key()
    await store.put_bytes(bucket, key, b"present")
    unknown_version = "0" * 32
    assert await store.head(bucket, key, unknown_version) is None
    with pytest.raises(ObjectNotFoundError) as missing:
        await store.get_bytes(bucket, key, unknown_version)
    assert missing.value.status == 404
    with pytest.raises(ObjectNotFoundError):
        await store.stream_sha256(bucket, key, unknown_version)

    # a request botocore refuses to send is an error of ours, not an unavailable store
    with pytest.raises(ObjectStoreError) as invalid:
        await store.get_bytes("Not A Bucket Name!", key)
    assert not isinstance(invalid.value, ObjectStoreUnavailableError)


async def test_copy_within_the_registry(store: ObjectStore, configured: Settings) -> None:
    bucket = configured.s3_registry_bucket
    source = await store.put_bytes(bucket, fresh_key("a"), b"payload", metadata={"k": "v"})
    await store.put_bytes(bucket, source.key, b"newer payload")  # the copy names a version
    target = fresh_key("b")
    copied = await store.copy(source.uri, bucket, target)
    assert copied.version_id
    assert await store.get_bytes(bucket, target, copied.version_id) == b"payload"
    info = await store.head(bucket, target)
    assert info is not None
    assert info.metadata == {"k": "v"}
    assert info.sse_algorithm == "AES256"

    replaced = await store.copy(source.uri, bucket, fresh_key("c"), metadata={"new": "1"})
    replaced_info = await store.head(bucket, replaced.key, replaced.version_id)
    assert replaced_info is not None
    assert replaced_info.metadata == {"new": "1"}

    with pytest.raises(ObjectNotFoundError):
        await store.copy(S3Uri(bucket, fresh_key("absent")), bucket, fresh_key("d"))


async def test_a_locked_version_cannot_be_deleted_or_shortened(
    store: ObjectStore, configured: Settings
) -> None:
    bucket, key = configured.s3_datasets_bucket, fresh_key("snapshot.parquet")
    until = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    stored = await store.put_bytes(bucket, key, b"rows", retention=Retention("COMPLIANCE", until))
    assert stored.version_id is not None
    info = await store.head(bucket, key, stored.version_id)
    assert info is not None
    assert info.retention == Retention("COMPLIANCE", until)

    with pytest.raises(AccessDeniedError):
        await store.delete_version(bucket, key, stored.version_id)
    with pytest.raises(AccessDeniedError):
        await store.set_retention(
            bucket, key, stored.version_id, Retention("COMPLIANCE", until - timedelta(hours=1))
        )
    with pytest.raises(AccessDeniedError):
        await store.set_retention(bucket, key, stored.version_id, Retention("GOVERNANCE", until))
    later = until + timedelta(days=1)
    await store.set_retention(bucket, key, stored.version_id, Retention("COMPLIANCE", later))
    extended = await store.head(bucket, key, stored.version_id)
    assert extended is not None
    assert extended.retention == Retention("COMPLIANCE", later)
    assert await store.get_bytes(bucket, key, stored.version_id) == b"rows"


async def test_the_bucket_default_retention_applies(
    store: ObjectStore, configured: Settings
) -> None:
    bucket, key = configured.s3_datasets_bucket, fresh_key("by-default")
    stored = await store.put_bytes(bucket, key, b"locked by default")
    info = await store.head(bucket, key, stored.version_id)
    assert info is not None
    assert info.retention is not None
    assert info.retention.mode == "COMPLIANCE"
    expected = datetime.now(UTC) + timedelta(days=configured.dataset_retention_days)
    assert abs(info.retention.retain_until - expected) < timedelta(minutes=5)


async def test_retention_needs_an_object_lock_bucket(
    store: ObjectStore, configured: Settings
) -> None:
    until = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(ObjectStoreError) as refused:
        await store.put_bytes(
            configured.s3_registry_bucket,
            fresh_key(),
            b"x",
            retention=Retention("COMPLIANCE", until),
        )
    assert refused.value.status == 400


async def test_credentials_are_required(s3_settings: Settings) -> None:
    with pytest.raises(ObjectStoreConfigError, match="RAI_S3_ACCESS_KEY"):
        ObjectStore.from_settings(s3_settings.model_copy(update={"s3_secret_key": None}))
    with pytest.raises(ObjectStoreConfigError):
        ObjectStore.from_settings(s3_settings.model_copy(update={"s3_access_key": None}))


async def test_a_wrong_secret_is_refused(store: ObjectStore, configured: Settings) -> None:
    assert store.access_key == configured.s3_access_key
    stranger = store.with_credentials(store.access_key, SecretStr("not-the-secret"))
    async with stranger:
        with pytest.raises(CredentialsRejectedError) as refused:
            await stranger.get_bytes(configured.s3_registry_bucket, fresh_key())
    assert refused.value.status == 403
    assert "not-the-secret" not in repr(stranger)


async def test_stores_share_one_session_yet_keep_their_own_credentials(
    store: ObjectStore, configured: Settings
) -> None:
    # Both open at once, made from this thread's one aioboto3 session: the stranger's wrong
    # secret is refused while the store's own keys keep working, before and after.
    key = fresh_key()
    await store.put_bytes(configured.s3_registry_bucket, key, b"mine")
    stranger = store.with_credentials(store.access_key, SecretStr("not-the-secret"))
    async with stranger:
        assert stranger.client is not store.client
        with pytest.raises(CredentialsRejectedError):
            await stranger.get_bytes(configured.s3_registry_bucket, key)
        assert await store.get_bytes(configured.s3_registry_bucket, key) == b"mine"
    async with ObjectStore.from_settings(configured) as again:
        assert await again.get_bytes(configured.s3_registry_bucket, key) == b"mine"


def test_one_session_per_thread() -> None:
    here = objectstore._session()
    assert objectstore._session() is here
    elsewhere: list[object] = []
    thread = threading.Thread(target=lambda: elsewhere.append(objectstore._session()))
    thread.start()
    thread.join()
    assert elsewhere
    assert elsewhere[0] is not here


async def test_an_unreachable_endpoint(s3_settings: Settings) -> None:
    nobody = s3_settings.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:1"})
    async with ObjectStore.from_settings(nobody) as store:
        with pytest.raises(ObjectStoreUnavailableError, match=re.escape("127.0.0.1:1")):
            await store.head("any-bucket", "key")


async def test_an_unopened_store_says_so(configured: Settings) -> None:
    store = ObjectStore.from_settings(configured)
    with pytest.raises(ObjectStoreError, match="not open"):
        await store.head(configured.s3_registry_bucket, "key")
