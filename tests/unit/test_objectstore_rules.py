"""The object store's pure parts: S3 URIs, error mapping, and the rules that decide whether a
bucket policy or lifecycle configuration is what M3/M4 ask for."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st
from types_aiobotocore_s3.type_defs import LifecycleRuleOutputTypeDef

from adapters.objectstore import (
    AccessDeniedError,
    BucketNotFoundError,
    CredentialsRejectedError,
    InvalidS3UriError,
    ObjectNotFoundError,
    ObjectStoreError,
    Retention,
    S3Uri,
    translate_client_error,
)
from adapters.storage_setup import (
    DENY_ANONYMOUS_SID,
    StorageSetupError,
    anonymous_denial,
    deny_anonymous_statement,
    expire_tmp_rule,
    merged_policy,
    tmp_expiry,
)

pytestmark = pytest.mark.unit

BUCKET = "rai-model-registry"

bucket_names = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", fullmatch=True)
# any text but lone surrogates (not encodable, so no S3 key)
characters = st.characters(exclude_categories=["Cs"])
keys = st.text(characters, min_size=1, max_size=80)
version_ids = st.none() | st.text(characters, min_size=1)


@given(bucket_names, keys, version_ids)
def test_uri_round_trips(bucket: str, key: str, version_id: str | None) -> None:
    uri = S3Uri(bucket, key, version_id)
    assert S3Uri.parse(str(uri)) == uri


def test_uri_text() -> None:
    assert str(S3Uri(BUCKET, "drift-reports/t1/r 1.json")) == (
        "s3://rai-model-registry/drift-reports/t1/r%201.json"
    )
    assert str(S3Uri(BUCKET, "a?b#c%d", "v/1+2")) == (
        "s3://rai-model-registry/a%3Fb%23c%25d?versionId=v%2F1%2B2"
    )
    assert S3Uri.parse("s3://b1/x/y.bin?versionId=abc") == S3Uri("b1", "x/y.bin", "abc")
    assert S3Uri.parse("s3://b1/x/y.bin").at_version("v9") == S3Uri("b1", "x/y.bin", "v9")


@pytest.mark.parametrize(
    "text",
    [
        "http://bucket/key",
        "s3://bucket",
        "s3://bucket/",
        "s3:///key",
        "s3://bucket/key?versionId=",
        "s3://bucket/key?other=1",
        "s3://bucket/key?versionId=a&versionId=b",
        "s3://bucket/key#fragment",
    ],
)
def test_not_uris(text: str) -> None:
    with pytest.raises(InvalidS3UriError):
        S3Uri.parse(text)


def test_a_retention_date_needs_a_zone() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Retention("COMPLIANCE", datetime.fromisoformat("2030-01-01T00:00:00"))
    assert Retention("COMPLIANCE", datetime(2030, 1, 1, tzinfo=UTC)).mode == "COMPLIANCE"


def client_error(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "server says no"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "Operation")


@pytest.mark.parametrize(
    ("code", "status", "key", "version", "expected"),
    [
        ("NoSuchKey", 404, "k", None, ObjectNotFoundError),
        ("NoSuchVersion", 404, "k", "v", ObjectNotFoundError),
        ("404", 404, "k", None, ObjectNotFoundError),
        ("InvalidArgument", 400, "k", "v", ObjectNotFoundError),
        ("InvalidArgument", 400, "k", None, ObjectStoreError),
        ("NoSuchBucket", 404, "k", None, BucketNotFoundError),
        ("404", 404, None, None, BucketNotFoundError),
        ("NoSuchBucketPolicy", 404, None, None, ObjectStoreError),
        ("AccessDenied", 403, "k", None, AccessDeniedError),
        ("403", 403, None, None, AccessDeniedError),
        ("SignatureDoesNotMatch", 403, "k", None, CredentialsRejectedError),
        ("InvalidAccessKeyId", 403, None, None, CredentialsRejectedError),
        ("InternalError", 500, "k", None, ObjectStoreError),
    ],
)
def test_error_mapping(
    code: str, status: int, key: str | None, version: str | None, expected: type[Exception]
) -> None:
    error = translate_client_error(client_error(code, status), "GET", "bucket", key, version)
    assert type(error) is expected
    assert (error.code, error.status) == (code, status)
    assert "server says no" in str(error)


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


FOREIGN = {
    "Sid": "NoSecrets",
    "Effect": "Deny",
    "Principal": "*",
    "Action": "s3:GetObject",
    "Resource": f"arn:aws:s3:::{BUCKET}/secrets/*",
}


def test_the_policy_gains_our_statement_and_keeps_others() -> None:
    created = merged_policy(None, BUCKET)
    assert created is not None
    assert json.loads(created)["Statement"] == [deny_anonymous_statement(BUCKET)]
    assert merged_policy(created, BUCKET) is None

    merged = merged_policy(policy(FOREIGN), BUCKET)
    assert merged is not None
    assert json.loads(merged)["Statement"] == [FOREIGN, deny_anonymous_statement(BUCKET)]

    # forms a server may hand back: lists for single values, another resource order
    normalised = deny_anonymous_statement(BUCKET) | {
        "Action": ["s3:*"],
        "Resource": list(reversed(deny_anonymous_statement(BUCKET)["Resource"])),
    }
    assert merged_policy(policy(FOREIGN, normalised), BUCKET) is None

    # our statement, edited by someone: replaced, the rest kept
    edited = deny_anonymous_statement(BUCKET) | {"Action": "s3:GetObject"}
    replaced = merged_policy(policy(edited, FOREIGN), BUCKET)
    assert replaced is not None
    assert json.loads(replaced)["Statement"] == [FOREIGN, deny_anonymous_statement(BUCKET)]

    with pytest.raises(StorageSetupError, match="not JSON"):
        merged_policy("{not json", BUCKET)


def test_what_counts_as_denying_anonymous_access() -> None:
    ours = deny_anonymous_statement(BUCKET)
    assert anonymous_denial(policy(FOREIGN, ours), BUCKET) == DENY_ANONYMOUS_SID
    assert anonymous_denial(None, BUCKET) is None
    assert anonymous_denial(policy(FOREIGN), BUCKET) is None
    assert anonymous_denial(policy(ours), "another-bucket") is None
    unnamed = {key: value for key, value in ours.items() if key != "Sid"}
    assert anonymous_denial(policy(FOREIGN, unnamed), BUCKET) == "statement 2"
    spelled_otherwise = ours | {
        "Principal": {"AWS": ["*"]},
        "Action": ["s3:GetObject", "*"],
        "Resource": "*",
        "Condition": {"Null": {"AWS:UserId": "TRUE"}},
    }
    assert anonymous_denial(policy(spelled_otherwise), BUCKET) == DENY_ANONYMOUS_SID
    flaws: list[dict[str, Any]] = [
        {"Effect": "Allow"},
        {"Principal": {"AWS": "arn:aws:iam::1:root"}},
        {"Action": "s3:GetObject"},
        {"Resource": f"arn:aws:s3:::{BUCKET}"},
        # denies everybody, the administrator too
        {"Condition": {}},
        # SeaweedFS never sets aws:PrincipalType: this would deny nobody there
        {"Condition": {"StringEquals": {"aws:PrincipalType": "Anonymous"}}},
        {"Condition": {"Null": {"aws:userid": "false"}}},
    ]
    for flaw in flaws:
        assert anonymous_denial(policy(ours | flaw), BUCKET) is None, flaw


def rule(**fields: Any) -> LifecycleRuleOutputTypeDef:
    """Our rule with ``fields`` changed: any shape a server might hand back."""
    return cast("LifecycleRuleOutputTypeDef", {**expire_tmp_rule(1), **fields})


def test_what_counts_as_expiring_tmp() -> None:
    assert tmp_expiry([rule()], 1) == (
        "rule rai-expire-tmp: tmp/ expires after 1 day(s), noncurrent versions after 1 day(s)"
    )
    assert tmp_expiry([rule(Filter={"Prefix": ""}, ID="all")], 1) == (
        "rule all: the whole bucket expires after 1 day(s), noncurrent versions after 1 day(s)"
    )
    legacy = rule(Prefix="tmp/")
    del legacy["Filter"]
    assert tmp_expiry([legacy], 1) is not None
    assert tmp_expiry([rule()], 2) is not None  # faster than asked is fine
    assert tmp_expiry([], 1) is None
    assert tmp_expiry([rule(Status="Disabled")], 1) is None
    assert tmp_expiry([rule(Expiration={"Days": 2})], 1) is None
    assert tmp_expiry([rule(NoncurrentVersionExpiration={"NoncurrentDays": 7})], 1) is None
    no_noncurrent = rule()
    del no_noncurrent["NoncurrentVersionExpiration"]
    assert tmp_expiry([no_noncurrent], 1) is None
    assert tmp_expiry([rule(Filter={"Prefix": "tmp/reports/"})], 1) is None
    assert (
        tmp_expiry([rule(Filter={"Prefix": "tmp/", "Tag": {"Key": "a", "Value": "b"}})], 1) is None
    )
