"""The two buckets of RAI Level D, configured (``init_storage``) and verified live
(``check_storage``): MISSION M1-M4.

- the model registry (``settings.s3_registry_bucket``): versioning Enabled, default server-side
  encryption (SSE-S3, AES256);
- the datasets (``settings.s3_datasets_bucket``): Object Lock with a default COMPLIANCE retention
  of ``settings.dataset_retention_days`` days (WORM; versioning comes with it), and the same
  default encryption;
- on both: a lifecycle rule expiring everything under ``tmp/`` after ``settings.tmp_expiry_days``
  day(s) — current versions, the versions they leave behind (both buckets keep versions) and
  unfinished multipart uploads — and a bucket policy denying every action to unauthenticated
  requests.

Public access is blocked by that policy, not by PutPublicAccessBlock, which SeaweedFS does not
implement. The policy's condition is ``Null: {"aws:userid": "true"}``: signed requests always
carry ``aws:userid``, anonymous ones never do (AWS documents it so; SeaweedFS behaves so), so the
deny hits strangers only and the administrator keeps working. A ``Principal: "*"`` deny without a
condition would lock the administrator out as well (SeaweedFS then refuses even
GetBucketPolicy), and ``aws:PrincipalType = Anonymous`` is ignored by SeaweedFS.

Everything ``init_storage`` sets it first reads, so a second run changes nothing. Settings it
does not own are kept: other lifecycle rules and other policy statements survive, only the rule
``rai-expire-tmp`` and the statement ``RaiDenyAnonymous`` are ours.

``check_storage`` proves the properties with real requests; its probe objects live under
``tmp/storage-check/``, where the lifecycle rule removes them. The locked probe in the datasets
bucket carries a one-day COMPLIANCE retention, so nobody can remove it before then.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import aiohttp
from pydantic import SecretStr

from adapters.objectstore import (
    AccessDeniedError,
    ObjectInfo,
    ObjectStore,
    ObjectStoreError,
    Retention,
    StoredObject,
    s3_errors,
)
from settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3.literals import BucketLocationConstraintType
    from types_aiobotocore_s3.type_defs import (
        CreateBucketRequestTypeDef,
        LifecycleRuleOutputTypeDef,
        LifecycleRuleTypeDef,
        LifecycleRuleUnionTypeDef,
    )

TMP_PREFIX = "tmp/"
CHECK_PREFIX = TMP_PREFIX + "storage-check/"
EXPIRE_TMP_RULE_ID = "rai-expire-tmp"
DENY_ANONYMOUS_SID = "RaiDenyAnonymous"
#: The condition that tells an anonymous request from a signed one (see the module docstring).
ANONYMOUS_CONDITION: Mapping[str, Mapping[str, str]] = {"Null": {"aws:userid": "true"}}
#: Server-side encryption algorithms that count as "encrypted at rest by default".
SSE_ALGORITHMS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})
#: Retention of the check's locked probe: long enough for any clock skew, short enough to go.
PROBE_RETENTION = timedelta(days=1)
_ANONYMOUS_TIMEOUT_SECONDS = 10.0


class StorageSetupError(ObjectStoreError):
    """A bucket is in a state ``init_storage`` cannot repair."""


@dataclass(frozen=True)
class SetupStep:
    """One setting of one bucket after ``init_storage``: what it is, and whether this run
    changed it."""

    bucket: str
    setting: str
    state: str
    changed: bool

    def line(self) -> str:
        done = "set now" if self.changed else "already"
        return f"{self.bucket}: {self.setting}: {self.state} ({done})"


@dataclass(frozen=True)
class CheckResult:
    """One live check: ``ok`` and why."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL':<4}  {self.name}: {self.detail}"


# -- pure rules: what the settings should look like, and whether they do ----------------------


def bucket_arns(bucket: str) -> list[str]:
    return [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]


def deny_anonymous_statement(bucket: str) -> dict[str, Any]:
    return {
        "Sid": DENY_ANONYMOUS_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": bucket_arns(bucket),
        "Condition": {name: dict(values) for name, values in ANONYMOUS_CONDITION.items()},
    }


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else [value]


def _statements(policy: str) -> list[dict[str, Any]]:
    try:
        document = json.loads(policy)
    except ValueError:
        raise StorageSetupError(f"the bucket policy is not JSON: {policy[:80]!r}") from None
    if not isinstance(document, dict):
        raise StorageSetupError("the bucket policy is not a JSON object")
    statements = _as_list(document.get("Statement", []))
    return [statement for statement in statements if isinstance(statement, dict)]


def _same_statement(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Equal up to the forms S3 servers normalise: a single value or a one-element list, the
    order of resources."""

    def normal(statement: Mapping[str, Any]) -> dict[str, Any]:
        result = dict(statement)
        for name in ("Action", "Resource"):
            if name in result:
                result[name] = sorted(map(str, _as_list(result[name])))
        return result

    return normal(found) == normal(wanted)


def merged_policy(current: str | None, bucket: str) -> str | None:
    """The policy document to store so that it holds our deny-anonymous statement (other
    statements kept); None if ``current`` already has it as it should be."""
    wanted = deny_anonymous_statement(bucket)
    statements = _statements(current) if current else []
    ours = [s for s in statements if s.get("Sid") == DENY_ANONYMOUS_SID]
    if len(ours) == 1 and _same_statement(ours[0], wanted):
        return None
    others = [s for s in statements if s.get("Sid") != DENY_ANONYMOUS_SID]
    return json.dumps({"Version": "2012-10-17", "Statement": [*others, wanted]})


def _covers_everyone(principal: object) -> bool:
    if principal == "*":
        return True
    return isinstance(principal, dict) and "*" in _as_list(principal.get("AWS"))


def _is_anonymity_condition(condition: object) -> bool:
    if not isinstance(condition, dict) or len(condition) != 1:
        return False
    (operator, tests), *_ = condition.items()
    if operator != "Null" or not isinstance(tests, dict) or len(tests) != 1:
        return False
    (key, value), *_ = tests.items()
    return str(key).lower() == "aws:userid" and str(value).lower() == "true"


def anonymous_denial(policy: str | None, bucket: str) -> str | None:
    """The statement (its Sid, or its position) of ``policy`` that denies every S3 action on
    the bucket and its objects to unauthenticated requests; None if there is none."""
    if not policy:
        return None
    needed = set(bucket_arns(bucket))
    for position, statement in enumerate(_statements(policy)):
        actions = {str(a) for a in _as_list(statement.get("Action"))}
        resources = {str(r) for r in _as_list(statement.get("Resource"))}
        if (
            statement.get("Effect") == "Deny"
            and _covers_everyone(statement.get("Principal"))
            and actions & {"s3:*", "*"}
            and (needed <= resources or resources & {"*", "arn:aws:s3:::*"})
            and _is_anonymity_condition(statement.get("Condition"))
        ):
            return str(statement.get("Sid") or f"statement {position + 1}")
    return None


def expire_tmp_rule(days: int) -> LifecycleRuleTypeDef:
    return {
        "ID": EXPIRE_TMP_RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": TMP_PREFIX},
        "Expiration": {"Days": days},
        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
    }


def _rule_prefix(rule: LifecycleRuleOutputTypeDef) -> str | None:
    """The rule's key prefix if a prefix is its only filter (a tag or size filter narrows it)."""
    if "Filter" in rule:
        rule_filter = rule["Filter"]
        if set(rule_filter) - {"Prefix"}:
            return None
        return rule_filter.get("Prefix", "")
    return rule.get("Prefix", "")


def _rule_is_ours_as_wanted(rule: LifecycleRuleOutputTypeDef, days: int) -> bool:
    return (
        rule.get("ID") == EXPIRE_TMP_RULE_ID
        and rule.get("Status") == "Enabled"
        and _rule_prefix(rule) == TMP_PREFIX
        and dict(rule.get("Expiration", {})) == {"Days": days}
        and dict(rule.get("NoncurrentVersionExpiration", {})) == {"NoncurrentDays": days}
        and dict(rule.get("AbortIncompleteMultipartUpload", {})) == {"DaysAfterInitiation": days}
        and not rule.get("Transitions")
        and not rule.get("NoncurrentVersionTransitions")
    )


def tmp_expiry(rules: Sequence[LifecycleRuleOutputTypeDef], days: int) -> str | None:
    """Which enabled rule expires every object under ``tmp/`` — current and noncurrent
    versions — within ``days`` days; None if no rule does."""
    for rule in rules:
        prefix = _rule_prefix(rule)
        if rule.get("Status") != "Enabled" or prefix is None:
            continue
        if not TMP_PREFIX.startswith(prefix):
            continue
        current = rule.get("Expiration", {}).get("Days")
        noncurrent = rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
        if (
            current is not None
            and current <= days
            and noncurrent is not None
            and noncurrent <= days
        ):
            where = prefix or "the whole bucket"
            return (
                f"rule {rule.get('ID', '(no id)')}: {where} expires after {current} day(s),"
                f" noncurrent versions after {noncurrent} day(s)"
            )
    return None


# -- init -------------------------------------------------------------------------------------


async def _ensure_bucket(
    store: ObjectStore, bucket: str, region: str, *, object_lock: bool
) -> SetupStep:
    if await store.bucket_exists(bucket):
        return SetupStep(bucket, "bucket", "exists", changed=False)
    request: CreateBucketRequestTypeDef = {"Bucket": bucket}
    if region != "us-east-1":
        # Any region name: the stubs list only AWS's, other S3 servers have their own.
        location = cast("BucketLocationConstraintType", region)
        request["CreateBucketConfiguration"] = {"LocationConstraint": location}
    if object_lock:
        request["ObjectLockEnabledForBucket"] = True
    try:
        with s3_errors("CreateBucket", bucket):
            await store.client.create_bucket(**request)
    except ObjectStoreError as exc:
        if exc.code != "BucketAlreadyOwnedByYou":  # created meanwhile by another init
            raise
        return SetupStep(bucket, "bucket", "exists", changed=False)
    state = "created with Object Lock" if object_lock else "created"
    return SetupStep(bucket, "bucket", state, changed=True)


async def _ensure_versioning(store: ObjectStore, bucket: str, why: str = "") -> SetupStep:
    with s3_errors("GetBucketVersioning", bucket):
        current = await store.client.get_bucket_versioning(Bucket=bucket)
    state = "Enabled" + why
    if current.get("Status") == "Enabled":
        return SetupStep(bucket, "versioning", state, changed=False)
    with s3_errors("PutBucketVersioning", bucket):
        await store.client.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
        )
    return SetupStep(bucket, "versioning", state, changed=True)


async def _ensure_encryption(store: ObjectStore, bucket: str) -> SetupStep:
    try:
        with s3_errors("GetBucketEncryption", bucket):
            current = await store.client.get_bucket_encryption(Bucket=bucket)
        rules = current["ServerSideEncryptionConfiguration"]["Rules"]
    except ObjectStoreError as exc:
        if exc.status != 404:
            raise
        rules = []
    for rule in rules:
        algorithm = rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
        if algorithm in SSE_ALGORITHMS:
            return SetupStep(bucket, "default encryption", str(algorithm), changed=False)
    with s3_errors("PutBucketEncryption", bucket):
        await store.client.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
    return SetupStep(bucket, "default encryption", "AES256", changed=True)


async def _object_lock_rule(store: ObjectStore, bucket: str) -> tuple[bool, str | None, int | None]:
    """(Object Lock enabled, default mode, default days) of the bucket."""
    try:
        with s3_errors("GetObjectLockConfiguration", bucket):
            answer = await store.client.get_object_lock_configuration(Bucket=bucket)
    except ObjectStoreError as exc:
        if exc.status == 404 and exc.code != "NoSuchBucket":
            return False, None, None
        raise
    configuration = answer.get("ObjectLockConfiguration", {})
    default = configuration.get("Rule", {}).get("DefaultRetention", {})
    days = default.get("Days")
    if days is None and "Years" in default:
        days = default["Years"] * 365
    return configuration.get("ObjectLockEnabled") == "Enabled", default.get("Mode"), days


async def _ensure_object_lock(store: ObjectStore, bucket: str, days: int) -> list[SetupStep]:
    enabled, mode, current_days = await _object_lock_rule(store, bucket)
    # Object Lock needs versioning (a bucket created with Object Lock has it). S3 (since 2023)
    # and SeaweedFS let a versioned bucket turn Object Lock on later, others only at creation;
    # objects written before carry no retention either way.
    steps = [await _ensure_versioning(store, bucket, " (needed by Object Lock)")]
    wanted = f"COMPLIANCE {days} days"
    if enabled and mode == "COMPLIANCE" and current_days == days:
        steps.append(SetupStep(bucket, "object lock", "Enabled", changed=False))
        steps.append(SetupStep(bucket, "default retention", wanted, changed=False))
        return steps
    try:
        with s3_errors("PutObjectLockConfiguration", bucket):
            await store.client.put_object_lock_configuration(
                Bucket=bucket,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}},
                },
            )
    except ObjectStoreError as exc:
        if enabled:
            raise
        raise StorageSetupError(
            f"bucket {bucket} exists without Object Lock and the server refuses to turn it on"
            f" afterwards ({exc}); Object Lock can only be chosen when a bucket is created:"
            " empty and delete the bucket, or name another one with RAI_S3_DATASETS_BUCKET,"
            " then run `rai storage init` again"
        ) from exc
    if enabled:
        steps.append(SetupStep(bucket, "object lock", "Enabled", changed=False))
    else:
        steps.append(
            SetupStep(
                bucket,
                "object lock",
                "Enabled on the existing bucket (objects stored before have no retention)",
                changed=True,
            )
        )
    steps.append(SetupStep(bucket, "default retention", wanted, changed=True))
    return steps


async def _lifecycle_rules(store: ObjectStore, bucket: str) -> list[LifecycleRuleOutputTypeDef]:
    try:
        with s3_errors("GetBucketLifecycleConfiguration", bucket):
            answer = await store.client.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ObjectStoreError as exc:
        if exc.code == "NoSuchLifecycleConfiguration":
            return []
        raise
    return list(answer.get("Rules", []))


async def _ensure_lifecycle(store: ObjectStore, bucket: str, days: int) -> SetupStep:
    rules = await _lifecycle_rules(store, bucket)
    state = f"{TMP_PREFIX} expires after {days} day(s) (rule {EXPIRE_TMP_RULE_ID})"
    ours = [rule for rule in rules if rule.get("ID") == EXPIRE_TMP_RULE_ID]
    if len(ours) == 1 and _rule_is_ours_as_wanted(ours[0], days):
        return SetupStep(bucket, "lifecycle", state, changed=False)
    kept: list[LifecycleRuleUnionTypeDef] = [
        rule for rule in rules if rule.get("ID") != EXPIRE_TMP_RULE_ID
    ]
    with s3_errors("PutBucketLifecycleConfiguration", bucket):
        await store.client.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": [*kept, expire_tmp_rule(days)]}
        )
    return SetupStep(bucket, "lifecycle", state, changed=True)


async def _bucket_policy(store: ObjectStore, bucket: str) -> str | None:
    try:
        with s3_errors("GetBucketPolicy", bucket):
            answer = await store.client.get_bucket_policy(Bucket=bucket)
    except ObjectStoreError as exc:
        if exc.code == "NoSuchBucketPolicy":
            return None
        raise
    return answer.get("Policy")


async def _ensure_policy(store: ObjectStore, bucket: str) -> SetupStep:
    state = f"denies all actions to anonymous requests (statement {DENY_ANONYMOUS_SID})"
    policy = merged_policy(await _bucket_policy(store, bucket), bucket)
    if policy is None:
        return SetupStep(bucket, "policy", state, changed=False)
    with s3_errors("PutBucketPolicy", bucket):
        await store.client.put_bucket_policy(Bucket=bucket, Policy=policy)
    return SetupStep(bucket, "policy", state, changed=True)


async def init_storage(store: ObjectStore, settings: Settings) -> list[SetupStep]:
    """Create and configure both buckets; idempotent. One step per bucket setting."""
    registry, datasets = settings.s3_registry_bucket, settings.s3_datasets_bucket
    days = settings.tmp_expiry_days
    steps = [
        await _ensure_bucket(store, registry, settings.s3_region, object_lock=False),
        await _ensure_versioning(store, registry),
        await _ensure_encryption(store, registry),
        await _ensure_lifecycle(store, registry, days),
        await _ensure_policy(store, registry),
        await _ensure_bucket(store, datasets, settings.s3_region, object_lock=True),
    ]
    steps += await _ensure_object_lock(store, datasets, settings.dataset_retention_days)
    steps += [
        await _ensure_encryption(store, datasets),
        await _ensure_lifecycle(store, datasets, days),
        await _ensure_policy(store, datasets),
    ]
    return steps


# -- check ------------------------------------------------------------------------------------

Outcome = tuple[bool, str]


async def anonymous_get_status(url: str) -> int:
    """The HTTP status an unsigned GET of ``url`` gets."""
    timeout = aiohttp.ClientTimeout(total=_ANONYMOUS_TIMEOUT_SECONDS)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, allow_redirects=False) as response,
    ):
        return response.status


class _Checks:
    """The live checks of one ``check_storage`` run and the probe objects they share."""

    def __init__(self, store: ObjectStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.registry = settings.s3_registry_bucket
        self.datasets = settings.s3_datasets_bucket
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.prefix = f"{CHECK_PREFIX}{stamp}-{secrets.token_hex(4)}/"
        self.results: list[CheckResult] = []
        self.missing: set[str] = set()
        self.registry_probe: StoredObject | None = None
        self.registry_probe_data = secrets.token_bytes(1024)
        self.registry_probe_problem = "not written"
        self.locked_probe: ObjectInfo | None = None
        self.locked_probe_problem = "not written"

    async def record(
        self, name: str, bucket: str | None, check: Callable[[], Awaitable[Outcome]]
    ) -> None:
        if bucket is not None and bucket in self.missing:
            outcome: Outcome = (False, f"bucket {bucket} does not exist (`rai storage init`)")
        else:
            try:
                outcome = await check()
            except ObjectStoreError as exc:
                outcome = (False, str(exc))
        self.results.append(CheckResult(name, *outcome))

    # registry

    async def versioning(self) -> Outcome:
        with s3_errors("GetBucketVersioning", self.registry):
            answer = await self.store.client.get_bucket_versioning(Bucket=self.registry)
        status = answer.get("Status", "never enabled")
        return status == "Enabled", f"versioning is {status}"

    async def registry_encryption(self) -> Outcome:
        key = self.prefix + "encryption-probe"
        # No encryption header: whatever protects the object is the bucket's default.
        stored = await self.store.put_bytes(self.registry, key, self.registry_probe_data)
        self.registry_probe = stored
        info = await self.store.head(self.registry, key, stored.version_id)
        if info is None:
            self.registry_probe_problem = "the probe object vanished after it was written"
            return False, self.registry_probe_problem
        return _encrypted(info)

    async def authenticated_copy(self) -> Outcome:
        if self.registry_probe is None:
            return False, f"no probe object to copy ({self.registry_probe_problem})"
        copy = await self.store.copy(
            self.registry_probe.uri, self.registry, self.prefix + "encryption-probe-copy"
        )
        read_back = await self.store.get_bytes(copy.bucket, copy.key, copy.version_id)
        if read_back != self.registry_probe_data:
            return False, f"the copy {copy.uri} does not hold the original's bytes"
        await self._forget(copy)
        return True, f"CopyObject {self.registry_probe.uri} -> {copy.uri} and read back"

    # datasets

    async def object_lock(self) -> Outcome:
        enabled, mode, days = await _object_lock_rule(self.store, self.datasets)
        wanted = self.settings.dataset_retention_days
        if not enabled:
            return False, "Object Lock is not enabled"
        with s3_errors("GetBucketVersioning", self.datasets):
            versioning = await self.store.client.get_bucket_versioning(Bucket=self.datasets)
        if versioning.get("Status") != "Enabled":
            return False, "Object Lock is enabled but versioning is not"
        if mode != "COMPLIANCE" or days is None or days < wanted:
            found = f"{mode} {days} days" if mode else "none"
            return False, f"default retention is {found}, not COMPLIANCE >= {wanted} days"
        return True, f"Object Lock enabled, default retention COMPLIANCE {days} days"

    async def write_locked_probe(self) -> None:
        retention = Retention("COMPLIANCE", datetime.now(UTC) + PROBE_RETENTION)
        key = self.prefix + "locked-probe"
        try:
            stored = await self.store.put_bytes(
                self.datasets, key, secrets.token_bytes(256), retention=retention
            )
            info = await self.store.head(self.datasets, key, stored.version_id)
        except ObjectStoreError as exc:
            self.locked_probe_problem = f"a locked probe could not be written: {exc}"
            return
        if info is None or info.version_id is None:
            self.locked_probe_problem = "the locked probe has no version after it was written"
        elif info.retention is None or info.retention.mode != "COMPLIANCE":
            self.locked_probe_problem = (
                f"the probe {info.uri} was stored without its COMPLIANCE retention"
                f" ({info.retention})"
            )
        else:
            self.locked_probe = info

    async def datasets_encryption(self) -> Outcome:
        if self.locked_probe is None:
            return False, self.locked_probe_problem
        return _encrypted(self.locked_probe)

    async def locked_delete(self) -> Outcome:
        probe = self.locked_probe
        if probe is None or probe.version_id is None or probe.retention is None:
            return False, self.locked_probe_problem
        until = probe.retention.retain_until.isoformat(timespec="seconds")
        try:
            await self.store.delete_version(probe.bucket, probe.key, probe.version_id)
        except AccessDeniedError as exc:
            if await self.store.head(probe.bucket, probe.key, probe.version_id) is None:
                return False, f"DELETE was refused ({exc.code}) yet {probe.uri} is gone"
            return True, f"DELETE of {probe.uri} (COMPLIANCE until {until}) refused: {exc.code}"
        return False, f"the locked version {probe.uri} was deleted"

    async def shorten_retention(self) -> Outcome:
        probe = self.locked_probe
        if probe is None or probe.version_id is None or probe.retention is None:
            return False, self.locked_probe_problem
        earlier = probe.retention.retain_until - timedelta(hours=1)
        try:
            await self.store.set_retention(
                probe.bucket, probe.key, probe.version_id, Retention("COMPLIANCE", earlier)
            )
        except ObjectStoreError as exc:
            if exc.status is None:
                raise
            refusal = exc.code or str(exc.status)
        else:
            return False, f"the retention of {probe.uri} was shortened to {earlier.isoformat()}"
        after = await self.store.head(probe.bucket, probe.key, probe.version_id)
        if after is None or after.retention != probe.retention:
            found = after.retention if after else "object gone"
            return False, f"refused ({refusal}) yet the retention changed: {found}"
        return True, f"shortening the retention of {probe.uri} by 1 h refused: {refusal}"

    # both

    async def lifecycle(self, bucket: str) -> Outcome:
        rules = await _lifecycle_rules(self.store, bucket)
        days = self.settings.tmp_expiry_days
        found = tmp_expiry(rules, days)
        if found is None:
            described = ", ".join(str(rule.get("ID", "(no id)")) for rule in rules) or "none"
            return False, (
                f"no enabled rule expires {TMP_PREFIX} (current and noncurrent versions) within"
                f" {days} day(s); rules: {described}"
            )
        return True, found

    async def policy(self, bucket: str) -> Outcome:
        statement = anonymous_denial(await _bucket_policy(self.store, bucket), bucket)
        if statement is None:
            return False, (
                "no policy statement denies s3:* on the bucket and its objects to anonymous"
                ' requests (Principal "*", Condition Null aws:userid)'
            )
        return True, f"statement {statement} denies s3:* to anonymous requests"

    async def anonymous_get(self, bucket: str) -> Outcome:
        if bucket == self.registry:
            if self.registry_probe is None:
                return False, f"no probe object ({self.registry_probe_problem})"
            key = self.registry_probe.key
        else:
            if self.locked_probe is None:
                return False, f"no probe object ({self.locked_probe_problem})"
            key = self.locked_probe.key
        url = self.store.object_url(bucket, key)
        try:
            status = await anonymous_get_status(url)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, f"unsigned GET {url} did not complete: {exc!r}"
        return status == 403, f"unsigned GET {url} answered {status}"

    async def wrong_signature(self) -> Outcome:
        if self.registry_probe is None:
            return False, f"no probe object ({self.registry_probe_problem})"
        probe = self.registry_probe
        forged = SecretStr("wrong-" + secrets.token_urlsafe(24))
        async with self.store.with_credentials(self.store.access_key, forged) as stranger:
            try:
                await stranger.get_bytes(probe.bucket, probe.key, probe.version_id)
            except AccessDeniedError as exc:
                key_id = self.store.access_key
                return True, (
                    f"GET {probe.uri} signed with a wrong secret for access key {key_id}"
                    f" refused: {exc.status} {exc.code}"
                )
        return False, "a GET signed with a wrong secret was answered with the object"

    async def _forget(self, stored: StoredObject) -> None:
        """Remove a probe version now (lifecycle would, later); failures are harmless."""
        if stored.version_id is None:
            return
        try:
            await self.store.delete_version(stored.bucket, stored.key, stored.version_id)
        except ObjectStoreError:
            return

    async def run(self) -> list[CheckResult]:
        registry, datasets = self.registry, self.datasets
        # Nothing is written to a missing bucket: some servers (SeaweedFS) would create it.
        for bucket in (registry, datasets):
            if not await self.store.bucket_exists(bucket):
                self.missing.add(bucket)
        if datasets not in self.missing:
            await self.write_locked_probe()

        await self.record(f"{registry} versioning", registry, self.versioning)
        await self.record(f"{registry} default encryption", registry, self.registry_encryption)
        await self.record(f"{registry} authenticated copy", registry, self.authenticated_copy)
        await self.record(f"{registry} lifecycle", registry, lambda: self.lifecycle(registry))
        await self.record(f"{registry} policy", registry, lambda: self.policy(registry))
        await self.record(
            f"{registry} anonymous GET refused", registry, lambda: self.anonymous_get(registry)
        )
        await self.record(f"{datasets} object lock", datasets, self.object_lock)
        await self.record(f"{datasets} default encryption", datasets, self.datasets_encryption)
        await self.record(
            f"{datasets} locked version cannot be deleted", datasets, self.locked_delete
        )
        await self.record(
            f"{datasets} retention cannot be shortened", datasets, self.shorten_retention
        )
        await self.record(f"{datasets} lifecycle", datasets, lambda: self.lifecycle(datasets))
        await self.record(f"{datasets} policy", datasets, lambda: self.policy(datasets))
        await self.record(
            f"{datasets} anonymous GET refused", datasets, lambda: self.anonymous_get(datasets)
        )
        await self.record("wrongly signed request refused", registry, self.wrong_signature)
        if self.registry_probe is not None:
            await self._forget(self.registry_probe)
        return self.results


def _encrypted(info: ObjectInfo) -> Outcome:
    if info.sse_algorithm in SSE_ALGORITHMS:
        return True, f"{info.uri} (stored without encryption headers) is {info.sse_algorithm}"
    return False, f"{info.uri} (stored without encryption headers) is not encrypted at rest"


async def check_storage(store: ObjectStore, settings: Settings) -> list[CheckResult]:
    """Verify M1-M4 live, one result per property. Raises ObjectStoreError only when the
    store cannot be asked at all (unreachable, credentials refused)."""
    return await _Checks(store, settings).run()
