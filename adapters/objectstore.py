"""The S3 object store, over aioboto3.

    async with ObjectStore.from_settings(settings) as store:
        stored = await store.put_bytes(bucket, "drift-reports/t/r.json", body,
                                       content_type="application/json")
        stored.uri                                  # s3://bucket/drift-reports/t/r.json?versionId=…
        info = await store.head(bucket, key)        # ObjectInfo, or None if there is no such object
        digest = await store.stream_sha256(bucket, key, info.version_id)   # sha256_hex, size

One ``ObjectStore`` is built per process by a composition root and opened once: it owns one
aiobotocore client (a connection pool). Everything the store raises is an ``ObjectStoreError``;
no botocore exception leaves this module. Objects are named by ``S3Uri``
(``s3://bucket/key?versionId=...``), which pins the exact version a record refers to.

The client signs with SigV4 and uses path-style addressing (``endpoint/bucket/key``), which every
S3 server understands, SeaweedFS and MinIO included. Credentials are always explicit: the store
never falls back to boto's search of the environment or an instance profile. ``open()`` reads
botocore's service model from disk, as every aiobotocore client does: open the store once at
start-up, not per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import SecretStr

from settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import (
        CopyObjectRequestTypeDef,
        GetObjectRequestTypeDef,
        HeadObjectRequestTypeDef,
        PutObjectRequestTypeDef,
    )

LockMode = Literal["COMPLIANCE", "GOVERNANCE"]

#: How many bytes ``stream_sha256`` hashes at a time (on a worker thread).
HASH_BATCH_BYTES = 1 << 20
_READ_CHUNK_BYTES = 256 << 10
_CONNECT_TIMEOUT_SECONDS = 5.0
_READ_TIMEOUT_SECONDS = 60.0
_MAX_ATTEMPTS = 3

# Error codes, as S3 servers spell them (HEAD answers carry no body, only the status).
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})
_NO_BUCKET_CODES = frozenset({"NoSuchBucket"})
_REJECTED_CREDENTIAL_CODES = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"}
)
# What botocore and aiohttp raise when a request did not complete.
_INCOMPLETE_REQUEST = (
    BotoConnectionError,
    HTTPClientError,
    IncompleteReadError,
    OSError,
    TimeoutError,
)


class ObjectStoreError(Exception):
    """Anything that went wrong talking to the object store. ``code`` is the S3 error code and
    ``status`` the HTTP status when the server answered at all."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class ObjectStoreConfigError(ObjectStoreError):
    """The store cannot be built: credentials are missing."""


class ObjectStoreUnavailableError(ObjectStoreError):
    """The endpoint did not answer (refused, timed out, not S3)."""


class ObjectNotFoundError(ObjectStoreError):
    """No such object, version or bucket."""


class BucketNotFoundError(ObjectNotFoundError):
    """No such bucket."""


class AccessDeniedError(ObjectStoreError):
    """The server refused the request (403): a missing permission, a bucket policy, or an
    Object Lock retention that forbids the change."""


class CredentialsRejectedError(AccessDeniedError):
    """The server does not accept our signature: unknown access key or wrong secret."""


class InvalidS3UriError(ValueError):
    """Text that is not an ``s3://bucket/key[?versionId=...]`` URI."""


# Characters left as they are in the key part of an S3 URI; everything else is percent-encoded,
# so a key holding "?", "#" or "%" still round-trips.
_URI_KEY_SAFE = "/-_.~!$'()*+,;=:@"


@dataclass(frozen=True)
class S3Uri:
    """``s3://bucket/key`` plus, when it names one exact version, ``?versionId=...``."""

    bucket: str
    key: str
    version_id: str | None = None

    def __post_init__(self) -> None:
        if not self.bucket or "/" in self.bucket:
            raise InvalidS3UriError(f"not a bucket name: {self.bucket!r}")
        if not self.key:
            raise InvalidS3UriError("an S3 URI needs a key")
        if self.version_id == "":
            raise InvalidS3UriError("an empty version id; leave it out instead")

    def __str__(self) -> str:
        text = f"s3://{self.bucket}/{quote(self.key, safe=_URI_KEY_SAFE)}"
        if self.version_id is not None:
            text += "?versionId=" + quote(self.version_id, safe="")
        return text

    def at_version(self, version_id: str | None) -> S3Uri:
        return S3Uri(self.bucket, self.key, version_id)

    @classmethod
    def parse(cls, text: str) -> S3Uri:
        parts = urlsplit(text)
        if parts.scheme != "s3" or not parts.netloc or parts.fragment:
            raise InvalidS3UriError(f"not an s3://bucket/key URI: {text!r}")
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        if set(query) - {"versionId"} or any(len(values) != 1 for values in query.values()):
            raise InvalidS3UriError(f"only one versionId may follow the key: {text!r}")
        version = query["versionId"][0] if "versionId" in query else None
        return cls(parts.netloc, unquote(parts.path.removeprefix("/")), version)


@dataclass(frozen=True)
class Retention:
    """An Object Lock retention: the version cannot be deleted or overwritten until
    ``retain_until`` (COMPLIANCE: by nobody; GOVERNANCE: except with a bypass permission)."""

    mode: LockMode
    retain_until: datetime

    def __post_init__(self) -> None:
        if self.retain_until.tzinfo is None:
            raise ValueError("retain_until must be timezone-aware")


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD of one object version tells."""

    bucket: str
    key: str
    version_id: str | None
    size: int
    etag: str
    last_modified: datetime | None
    content_type: str | None
    metadata: Mapping[str, str]
    sse_algorithm: str | None
    retention: Retention | None

    @property
    def uri(self) -> S3Uri:
        return S3Uri(self.bucket, self.key, self.version_id)


@dataclass(frozen=True)
class StoredObject:
    """What a write (PUT or COPY) answered: where the new version is."""

    bucket: str
    key: str
    version_id: str | None
    etag: str
    sse_algorithm: str | None

    @property
    def uri(self) -> S3Uri:
        return S3Uri(self.bucket, self.key, self.version_id)


@dataclass(frozen=True)
class ContentDigest:
    """SHA-256 and size of one object version, computed from its bytes as read."""

    sha256_hex: str
    size: int
    version_id: str | None
    etag: str


def _status(error: ClientError) -> int | None:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def translate_client_error(
    error: ClientError,
    operation: str,
    bucket: str,
    key: str | None = None,
    version_id: str | None = None,
) -> ObjectStoreError:
    """The ObjectStoreError for an S3 error answer. ``key`` is None for a bucket operation;
    ``version_id`` is the version a read asked for (a malformed one is "not found" too)."""
    code = str(error.response.get("Error", {}).get("Code", "")) or None
    message = str(error.response.get("Error", {}).get("Message", "")) or str(error)
    status = _status(error)
    where = f"s3://{bucket}/{key}" if key is not None else f"bucket {bucket}"
    text = f"{operation} {where}: {code or status} ({message})"
    if code in _NO_BUCKET_CODES or (key is None and code in _NOT_FOUND_CODES):
        return BucketNotFoundError(text, code=code, status=status)
    if key is not None and (code in _NOT_FOUND_CODES or status == 404):
        return ObjectNotFoundError(text, code=code, status=status)
    if key is not None and version_id is not None and code == "InvalidArgument":
        return ObjectNotFoundError(text, code=code, status=status)
    if code in _REJECTED_CREDENTIAL_CODES:
        return CredentialsRejectedError(text, code=code, status=status)
    if status == 403:
        return AccessDeniedError(text, code=code, status=status)
    return ObjectStoreError(text, code=code, status=status)


@contextlib.contextmanager
def s3_errors(
    operation: str, bucket: str, key: str | None = None, version_id: str | None = None
) -> Iterator[None]:
    """Turn botocore's exceptions raised inside the block into ObjectStoreErrors."""
    try:
        yield
    except ClientError as exc:
        raise translate_client_error(exc, operation, bucket, key, version_id) from exc
    except _INCOMPLETE_REQUEST as exc:
        # Refused or dropped connections, timeouts, truncated bodies: the request did not
        # complete, whatever the server meant.
        raise ObjectStoreUnavailableError(f"{operation} on {bucket}: {exc}") from exc
    except BotoCoreError as exc:
        # A request botocore would not even send (an invalid bucket name, say).
        raise ObjectStoreError(f"{operation} on {bucket}: {exc}") from exc


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _unquote_etag(etag: str) -> str:
    return etag.strip('"')


_sessions = threading.local()


def _session() -> aioboto3.Session:
    """This thread's aioboto3 session, made once and shared by every store the thread opens.

    A new session loads botocore's JSON models and endpoint data again (80-200 ms of CPU on
    this machine); a client made from a session that has them costs about 4 ms. The credentials
    are each client's own (passed to ``session.client``), so stores with different keys share
    it safely. One per thread, because a botocore session is not thread safe (its clients are).
    """
    session: aioboto3.Session | None = getattr(_sessions, "session", None)
    if session is None:
        session = aioboto3.Session()
        _sessions.session = session
    return session


class ObjectStore:
    """An S3 endpoint with one set of credentials. Open it (``async with`` or ``open()``)
    before use; ``close()`` releases its connections."""

    def __init__(
        self, *, endpoint_url: str, region: str, access_key: str, secret_key: SecretStr
    ) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.region = region
        self.access_key = access_key
        self._secret_key = secret_key
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: S3Client | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        """The store of ``RAI_S3_*``; ObjectStoreConfigError if the keys are not set."""
        if not settings.s3_access_key or settings.s3_secret_key is None:
            raise ObjectStoreConfigError(
                "S3 credentials are not set (RAI_S3_ACCESS_KEY and RAI_S3_SECRET_KEY)"
            )
        return cls(
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
        )

    def with_credentials(self, access_key: str, secret_key: SecretStr) -> ObjectStore:
        """A store (not yet open) for the same endpoint with other credentials."""
        return ObjectStore(
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key=access_key,
            secret_key=secret_key,
        )

    def __repr__(self) -> str:
        return f"ObjectStore({self.endpoint_url!r}, access_key={self.access_key!r})"

    async def open(self) -> None:
        if self._client is not None:
            return
        config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": _MAX_ATTEMPTS, "mode": "standard"},
            connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            read_timeout=_READ_TIMEOUT_SECONDS,
        )
        stack = contextlib.AsyncExitStack()
        self._client = await stack.enter_async_context(
            _session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self._secret_key.get_secret_value(),
                config=config,
            )
        )
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def client(self) -> S3Client:
        """The open aiobotocore client, for the bucket administration in ``storage_setup``."""
        if self._client is None:
            raise ObjectStoreError("the object store is not open")
        return self._client

    def object_url(self, bucket: str, key: str) -> str:
        """The plain HTTP(S) URL of an object (path style), as an anonymous client would use."""
        return f"{self.endpoint_url}/{bucket}/{quote(key, safe='/-_.~')}"

    # -- objects --------------------------------------------------------------------------

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo | None:
        """The object's (or the given version's) metadata; None if there is no such object
        or version (or bucket)."""
        request: HeadObjectRequestTypeDef = {"Bucket": bucket, "Key": key}
        if version_id is not None:
            request["VersionId"] = version_id
        try:
            with s3_errors("HEAD", bucket, key, version_id):
                answer = await self.client.head_object(**request)
        except ObjectNotFoundError:
            return None
        except ObjectStoreError as exc:
            # A HEAD of a delete marker's version answers 405 (AWS): not an object either.
            if exc.status == 405:
                return None
            raise
        mode = answer.get("ObjectLockMode")
        until = answer.get("ObjectLockRetainUntilDate")
        last_modified = answer.get("LastModified")
        return ObjectInfo(
            bucket=bucket,
            key=key,
            version_id=answer.get("VersionId"),
            size=answer.get("ContentLength", 0),
            etag=_unquote_etag(answer.get("ETag", "")),
            last_modified=_utc(last_modified) if last_modified else None,
            content_type=answer.get("ContentType"),
            metadata=dict(answer.get("Metadata", {})),
            sse_algorithm=answer.get("ServerSideEncryption"),
            retention=Retention(mode, _utc(until)) if mode and until else None,
        )

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        retention: Retention | None = None,
    ) -> StoredObject:
        """Store ``data`` as a new version of ``key``. Server-side encryption is the bucket's
        default; ``retention`` locks the new version (the bucket needs Object Lock)."""
        request: PutObjectRequestTypeDef = {
            "Bucket": bucket,
            "Key": key,
            "Body": data,
            "ContentType": content_type,
        }
        if metadata:
            request["Metadata"] = dict(metadata)
        if retention is not None:
            request["ObjectLockMode"] = retention.mode
            request["ObjectLockRetainUntilDate"] = retention.retain_until
        with s3_errors("PUT", bucket, key):
            answer = await self.client.put_object(**request)
        return StoredObject(
            bucket=bucket,
            key=key,
            version_id=answer.get("VersionId"),
            etag=_unquote_etag(answer.get("ETag", "")),
            sse_algorithm=answer.get("ServerSideEncryption"),
        )

    async def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        """The whole object in memory (for small documents; use ``stream_sha256`` for
        artifacts). ObjectNotFoundError if it does not exist."""
        request = self._get_request(bucket, key, version_id)
        with s3_errors("GET", bucket, key, version_id):
            answer = await self.client.get_object(**request)
            body = answer["Body"]
            try:
                return await body.read()
            finally:
                body.close()

    async def stream_sha256(
        self, bucket: str, key: str, version_id: str | None = None
    ) -> ContentDigest:
        """SHA-256 and size of the object's bytes, read as a stream: memory stays bounded by
        ``HASH_BATCH_BYTES`` whatever the size, and hashing runs on a worker thread so the
        event loop keeps serving. A body shorter than its Content-Length is an error."""
        request = self._get_request(bucket, key, version_id)
        digest = hashlib.sha256()
        size = 0
        with s3_errors("GET", bucket, key, version_id):
            answer = await self.client.get_object(**request)
            body = answer["Body"]
            try:
                batch = bytearray()
                async for chunk in body.iter_chunks(_READ_CHUNK_BYTES):
                    batch += chunk
                    if len(batch) >= HASH_BATCH_BYTES:
                        size += len(batch)
                        await asyncio.to_thread(digest.update, bytes(batch))
                        batch.clear()
                size += len(batch)
                digest.update(batch)
            finally:
                body.close()
        return ContentDigest(
            sha256_hex=digest.hexdigest(),
            size=size,
            version_id=answer.get("VersionId"),
            etag=_unquote_etag(answer.get("ETag", "")),
        )

    async def download(
        self, bucket: str, key: str, version_id: str | None, destination: Path
    ) -> ContentDigest:
        """Write the object's bytes to ``destination`` (created or truncated) while hashing
        them, streamed like ``stream_sha256``; file writes run on a worker thread."""
        request = self._get_request(bucket, key, version_id)
        digest = hashlib.sha256()
        size = 0
        with destination.open("wb") as out, s3_errors("GET", bucket, key, version_id):
            answer = await self.client.get_object(**request)
            body = answer["Body"]
            try:
                batch = bytearray()
                async for chunk in body.iter_chunks(_READ_CHUNK_BYTES):
                    batch += chunk
                    if len(batch) >= HASH_BATCH_BYTES:
                        size += len(batch)
                        data = bytes(batch)
                        await asyncio.to_thread(digest.update, data)
                        await asyncio.to_thread(out.write, data)
                        batch.clear()
                size += len(batch)
                digest.update(batch)
                out.write(batch)
            finally:
                body.close()
        return ContentDigest(
            sha256_hex=digest.hexdigest(),
            size=size,
            version_id=answer.get("VersionId"),
            etag=_unquote_etag(answer.get("ETag", "")),
        )

    async def list_keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under ``prefix`` (latest versions), in S3's order: sorted by key."""
        keys: list[str] = []
        token: str | None = None
        with s3_errors("LIST", bucket, prefix):
            while True:
                if token is None:
                    page = await self.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
                else:
                    page = await self.client.list_objects_v2(
                        Bucket=bucket, Prefix=prefix, ContinuationToken=token
                    )
                keys += [item["Key"] for item in page.get("Contents", []) if "Key" in item]
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or token is None:
                    return sorted(keys)

    async def copy(
        self,
        source: S3Uri,
        bucket: str,
        key: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Server-side copy of ``source`` (its given version, else the latest) to a new version
        of ``bucket/key`` (up to 5 GB, S3's single-request limit). The copy keeps the source's
        metadata unless ``metadata`` replaces it."""
        request: CopyObjectRequestTypeDef = {
            "Bucket": bucket,
            "Key": key,
            "CopySource": {"Bucket": source.bucket, "Key": source.key},
        }
        if source.version_id is not None:
            request["CopySource"] = {
                "Bucket": source.bucket,
                "Key": source.key,
                "VersionId": source.version_id,
            }
        if metadata is not None:
            request["Metadata"] = dict(metadata)
            request["MetadataDirective"] = "REPLACE"
        with s3_errors("COPY", bucket, key):
            answer = await self.client.copy_object(**request)
        result = answer.get("CopyObjectResult", {})
        return StoredObject(
            bucket=bucket,
            key=key,
            version_id=answer.get("VersionId"),
            etag=_unquote_etag(result.get("ETag", "")),
            sse_algorithm=answer.get("ServerSideEncryption"),
        )

    async def delete_version(self, bucket: str, key: str, version_id: str) -> None:
        """Delete one version for good. AccessDeniedError while a retention protects it."""
        with s3_errors("DELETE", bucket, key):
            await self.client.delete_object(Bucket=bucket, Key=key, VersionId=version_id)

    async def set_retention(
        self, bucket: str, key: str, version_id: str, retention: Retention
    ) -> None:
        """Change a version's retention. S3 only lets COMPLIANCE be extended: a shorter date
        or a weaker mode is refused with AccessDeniedError."""
        with s3_errors("PUT retention", bucket, key):
            await self.client.put_object_retention(
                Bucket=bucket,
                Key=key,
                VersionId=version_id,
                Retention={"Mode": retention.mode, "RetainUntilDate": retention.retain_until},
            )

    async def bucket_exists(self, bucket: str) -> bool:
        """True if the bucket exists (and we may see it)."""
        try:
            with s3_errors("HEAD", bucket):
                await self.client.head_bucket(Bucket=bucket)
        except ObjectStoreError as exc:
            if exc.status == 404:
                return False
            if exc.status != 403:
                raise
            # A HEAD answer has no body to say why; a GET on the bucket does (a wrong secret,
            # an unknown key, or a plain refusal).
            with s3_errors("GetBucketLocation", bucket):
                await self.client.get_bucket_location(Bucket=bucket)
            raise
        return True

    def _get_request(
        self, bucket: str, key: str, version_id: str | None
    ) -> GetObjectRequestTypeDef:
        request: GetObjectRequestTypeDef = {"Bucket": bucket, "Key": key}
        if version_id is not None:
            request["VersionId"] = version_id
        return request
