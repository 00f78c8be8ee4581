"""``init_storage`` and ``check_storage`` against a real S3 server (the run's private SeaweedFS).

Every test names its own buckets, so none sees another's configuration. The configuration is
read back with the S3 API itself, not through the code under test.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from types_aiobotocore_s3.client import S3Client
from types_aiobotocore_s3.type_defs import LifecycleRuleTypeDef

from adapters.objectstore import ObjectStore, ObjectStoreUnavailableError
from adapters.storage_setup import (
    EXPIRE_TMP_RULE_ID,
    CheckResult,
    SetupStep,
    check_storage,
    deny_anonymous_statement,
    expire_tmp_rule,
    init_storage,
)
from settings import Settings

pytestmark = pytest.mark.integration

REGISTRY_CHECKS = (
    "versioning",
    "default encryption",
    "authenticated copy",
    "lifecycle",
    "policy",
    "anonymous GET refused",
)
DATASETS_CHECKS = (
    "object lock",
    "default encryption",
    "locked version cannot be deleted",
    "retention cannot be shortened",
    "lifecycle",
    "policy",
    "anonymous GET refused",
)


def own_buckets(settings: Settings, **changes: object) -> Settings:
    tag = secrets.token_hex(4)
    return settings.model_copy(
        update={
            "s3_registry_bucket": f"st-{tag}-registry",
            "s3_datasets_bucket": f"st-{tag}-datasets",
            **changes,
        }
    )


def all_check_names(settings: Settings) -> list[str]:
    registry, datasets = settings.s3_registry_bucket, settings.s3_datasets_bucket
    return [
        *(f"{registry} {name}" for name in REGISTRY_CHECKS),
        *(f"{datasets} {name}" for name in DATASETS_CHECKS),
        "wrongly signed request refused",
    ]


def failed(results: list[CheckResult]) -> set[str]:
    return {result.name for result in results if not result.ok}


@pytest.fixture
async def store(s3_settings: Settings) -> AsyncIterator[ObjectStore]:
    async with ObjectStore.from_settings(s3_settings) as opened:
        yield opened


async def lifecycle_rules(client: S3Client, bucket: str) -> list[dict[str, object]]:
    answer = await client.get_bucket_lifecycle_configuration(Bucket=bucket)
    return [dict(rule) for rule in answer["Rules"]]


async def policy_statements(client: S3Client, bucket: str) -> list[dict[str, object]]:
    answer = await client.get_bucket_policy(Bucket=bucket)
    statements: list[dict[str, object]] = json.loads(answer["Policy"])["Statement"]
    return statements


async def test_init_twice_configures_everything_once(
    store: ObjectStore, s3_settings: Settings
) -> None:
    settings = own_buckets(s3_settings)
    registry, datasets = settings.s3_registry_bucket, settings.s3_datasets_bucket
    first = await init_storage(store, settings)
    came_with_the_bucket = [(datasets, "versioning"), (datasets, "object lock")]
    assert [(s.bucket, s.setting) for s in first if not s.changed] == came_with_the_bucket
    assert [(step.bucket, step.setting) for step in first] == [
        (registry, "bucket"),
        (registry, "versioning"),
        (registry, "default encryption"),
        (registry, "lifecycle"),
        (registry, "policy"),
        (datasets, "bucket"),
        (datasets, "versioning"),
        (datasets, "object lock"),
        (datasets, "default retention"),
        (datasets, "default encryption"),
        (datasets, "lifecycle"),
        (datasets, "policy"),
    ]
    second = await init_storage(store, settings)
    assert [step.changed for step in second] == [False] * len(second)

    def settled(steps: list[SetupStep]) -> list[tuple[str, str, str]]:
        return [(s.bucket, s.setting, s.state) for s in steps if s.setting != "bucket"]

    assert settled(second) == settled(first)

    client = store.client
    for bucket in (registry, datasets):
        versioning = await client.get_bucket_versioning(Bucket=bucket)
        assert versioning.get("Status") == "Enabled"
        encryption = await client.get_bucket_encryption(Bucket=bucket)
        (rule,) = encryption["ServerSideEncryptionConfiguration"]["Rules"]
        assert rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") == "AES256"
        (lifecycle,) = await lifecycle_rules(client, bucket)
        assert lifecycle == dict(expire_tmp_rule(1))
        assert await policy_statements(client, bucket) == [deny_anonymous_statement(bucket)]
    lock = await client.get_object_lock_configuration(Bucket=datasets)
    assert lock["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 365}},
    }
    with pytest.raises(Exception, match="ObjectLockConfigurationNotFound"):
        await client.get_object_lock_configuration(Bucket=registry)


async def test_init_keeps_foreign_rules_and_statements_and_follows_the_settings(
    store: ObjectStore, s3_settings: Settings
) -> None:
    settings = own_buckets(s3_settings)
    registry = settings.s3_registry_bucket
    client = store.client
    await client.create_bucket(Bucket=registry)
    logs_rule: LifecycleRuleTypeDef = {
        "ID": "keep-logs-a-month",
        "Status": "Enabled",
        "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 30},
    }
    await client.put_bucket_lifecycle_configuration(
        Bucket=registry,
        LifecycleConfiguration={"Rules": [logs_rule]},
    )
    no_secrets = {
        "Sid": "NoSecretsToAnyone",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{registry}/secrets/*",
    }
    await client.put_bucket_policy(
        Bucket=registry, Policy=json.dumps({"Version": "2012-10-17", "Statement": [no_secrets]})
    )

    steps = await init_storage(store, settings)
    assert steps[0].line() == f"{registry}: bucket: exists (already)"
    assert await lifecycle_rules(client, registry) == [dict(logs_rule), dict(expire_tmp_rule(1))]
    assert await policy_statements(client, registry) == [
        no_secrets,
        deny_anonymous_statement(registry),
    ]

    # Other numbers in the settings: the same rule and retention, changed in place.
    stricter = settings.model_copy(update={"tmp_expiry_days": 2, "dataset_retention_days": 30})
    changed = {(s.bucket, s.setting) for s in await init_storage(store, stricter) if s.changed}
    assert changed == {
        (registry, "lifecycle"),
        (stricter.s3_datasets_bucket, "lifecycle"),
        (stricter.s3_datasets_bucket, "default retention"),
    }
    assert await lifecycle_rules(client, registry) == [dict(logs_rule), dict(expire_tmp_rule(2))]
    lock = await client.get_object_lock_configuration(Bucket=stricter.s3_datasets_bucket)
    assert lock["ObjectLockConfiguration"].get("Rule") == {
        "DefaultRetention": {"Mode": "COMPLIANCE", "Days": 30}
    }
    assert not failed(await check_storage(store, stricter))


async def test_check_passes_on_an_initialised_store(
    store: ObjectStore, s3_settings: Settings
) -> None:
    settings = own_buckets(s3_settings)
    await init_storage(store, settings)
    results = await check_storage(store, settings)
    assert [result.name for result in results] == all_check_names(settings)
    assert failed(results) == set(), "\n".join(result.line() for result in results)
    by_name = {result.name: result.detail for result in results}
    datasets = settings.s3_datasets_bucket
    assert "refused: AccessDenied" in by_name[f"{datasets} locked version cannot be deleted"]
    assert "answered 403" in by_name[f"{datasets} anonymous GET refused"]
    assert "SignatureDoesNotMatch" in by_name["wrongly signed request refused"]

    # The registry's probes are removed at once; the locked one stays, under tmp/, until
    # its retention ends and the lifecycle rule takes it.
    listed = await store.client.list_object_versions(
        Bucket=settings.s3_registry_bucket, Prefix="tmp/"
    )
    assert listed.get("Versions", []) == []
    listed = await store.client.list_object_versions(Bucket=datasets, Prefix="tmp/")
    (locked,) = listed.get("Versions", [])
    assert locked.get("Key", "").startswith("tmp/storage-check/")
    running_again = await check_storage(store, settings)
    assert failed(running_again) == set()


Breaker = Callable[[S3Client, Settings], Awaitable[object]]


async def suspend_registry_versioning(client: S3Client, settings: Settings) -> object:
    return await client.put_bucket_versioning(
        Bucket=settings.s3_registry_bucket, VersioningConfiguration={"Status": "Suspended"}
    )


async def drop_registry_encryption(client: S3Client, settings: Settings) -> object:
    return await client.delete_bucket_encryption(Bucket=settings.s3_registry_bucket)


async def drop_datasets_encryption(client: S3Client, settings: Settings) -> object:
    return await client.delete_bucket_encryption(Bucket=settings.s3_datasets_bucket)


async def drop_registry_lifecycle(client: S3Client, settings: Settings) -> object:
    return await client.delete_bucket_lifecycle(Bucket=settings.s3_registry_bucket)


async def keep_noncurrent_tmp_versions(client: S3Client, settings: Settings) -> object:
    return await client.put_bucket_lifecycle_configuration(
        Bucket=settings.s3_datasets_bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": EXPIRE_TMP_RULE_ID,
                    "Status": "Enabled",
                    "Filter": {"Prefix": "tmp/"},
                    "Expiration": {"Days": 1},
                }
            ]
        },
    )


async def expire_tmp_after_a_month(client: S3Client, settings: Settings) -> object:
    rule = expire_tmp_rule(30)
    return await client.put_bucket_lifecycle_configuration(
        Bucket=settings.s3_registry_bucket, LifecycleConfiguration={"Rules": [rule]}
    )


async def drop_registry_policy(client: S3Client, settings: Settings) -> object:
    return await client.delete_bucket_policy(Bucket=settings.s3_registry_bucket)


async def make_datasets_public(client: S3Client, settings: Settings) -> object:
    bucket = settings.s3_datasets_bucket
    public = {
        "Sid": "PublicRead",
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
    }
    return await client.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [public]})
    )


async def weaken_default_retention(client: S3Client, settings: Settings) -> object:
    return await client.put_object_lock_configuration(
        Bucket=settings.s3_datasets_bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )


@pytest.mark.parametrize(
    ("breaker", "registry_fails", "datasets_fails"),
    [
        (suspend_registry_versioning, {"versioning"}, set()),
        (drop_registry_encryption, {"default encryption"}, set()),
        (drop_datasets_encryption, set(), {"default encryption"}),
        (drop_registry_lifecycle, {"lifecycle"}, set()),
        (keep_noncurrent_tmp_versions, set(), {"lifecycle"}),
        (expire_tmp_after_a_month, {"lifecycle"}, set()),
        (drop_registry_policy, {"policy"}, set()),
        (make_datasets_public, set(), {"policy", "anonymous GET refused"}),
        (weaken_default_retention, set(), {"object lock"}),
    ],
)
async def test_each_missing_property_fails_its_line(
    store: ObjectStore,
    s3_settings: Settings,
    breaker: Breaker,
    registry_fails: set[str],
    datasets_fails: set[str],
) -> None:
    settings = own_buckets(s3_settings)
    await init_storage(store, settings)
    await breaker(store.client, settings)
    results = await check_storage(store, settings)
    expected = {f"{settings.s3_registry_bucket} {name}" for name in registry_fails}
    expected |= {f"{settings.s3_datasets_bucket} {name}" for name in datasets_fails}
    assert failed(results) == expected, "\n".join(result.line() for result in results)

    # and `init` repairs it
    repaired = [step for step in await init_storage(store, settings) if step.changed]
    assert repaired
    assert failed(await check_storage(store, settings)) == set()


async def test_a_datasets_bucket_without_object_lock(
    store: ObjectStore, s3_settings: Settings
) -> None:
    settings = own_buckets(s3_settings)
    datasets = settings.s3_datasets_bucket
    client = store.client
    # Everything but Object Lock, as a bucket made by hand would be.
    await client.create_bucket(Bucket=datasets)
    await client.put_bucket_versioning(
        Bucket=datasets, VersioningConfiguration={"Status": "Enabled"}
    )
    await client.put_bucket_encryption(
        Bucket=datasets,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    await client.put_bucket_lifecycle_configuration(
        Bucket=datasets, LifecycleConfiguration={"Rules": [expire_tmp_rule(1)]}
    )
    await client.put_bucket_policy(
        Bucket=datasets,
        Policy=json.dumps(
            {"Version": "2012-10-17", "Statement": [deny_anonymous_statement(datasets)]}
        ),
    )
    results = await check_storage(store, settings)
    lines = {result.name: result for result in results}
    for name in (
        "object lock",
        "default encryption",
        "locked version cannot be deleted",
        "retention cannot be shortened",
        "anonymous GET refused",
    ):
        assert not lines[f"{datasets} {name}"].ok, lines[f"{datasets} {name}"].line()
    assert lines[f"{datasets} object lock"].detail == "Object Lock is not enabled"
    assert lines[f"{datasets} lifecycle"].ok
    assert lines[f"{datasets} policy"].ok

    # SeaweedFS, like S3 since 2023, lets a versioned bucket turn Object Lock on afterwards.
    steps = {step.setting: step for step in await init_storage(store, settings)}
    assert steps["object lock"].changed
    assert "existing bucket" in steps["object lock"].state
    assert failed(await check_storage(store, settings)) == set()


async def test_check_creates_nothing_where_buckets_are_missing(
    store: ObjectStore, s3_settings: Settings
) -> None:
    settings = own_buckets(s3_settings)
    results = await check_storage(store, settings)
    assert failed(results) == set(all_check_names(settings))
    assert all("does not exist" in result.detail for result in results)
    assert not await store.bucket_exists(settings.s3_registry_bucket)
    assert not await store.bucket_exists(settings.s3_datasets_bucket)


async def test_check_raises_when_the_store_does_not_answer(s3_settings: Settings) -> None:
    nobody = own_buckets(s3_settings, s3_endpoint_url="http://127.0.0.1:1")
    async with ObjectStore.from_settings(nobody) as store:
        with pytest.raises(ObjectStoreUnavailableError):
            await check_storage(store, nobody)
