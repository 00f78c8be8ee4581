"""AWS Signature Version 4 for S3 requests: enough to health-check the embedded S3 store
without an AWS SDK (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import parse_qsl, quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _canonical_query(query: str) -> str:
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}" for name, value in pairs
    )


def signed_headers(
    *,
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    region: str,
    now: datetime,
    headers: Mapping[str, str] | None = None,
    payload: bytes = b"",
    service: str = "s3",
) -> dict[str, str]:
    """Every header to send with the request, ``Authorization`` included.

    ``now`` must be timezone-aware UTC; it becomes ``x-amz-date``. ``url`` must already be
    percent-encoded the way it will be sent.
    """
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{now:%Y%m%d}/{region}/{service}/aws4_request"
    payload_hash = hashlib.sha256(payload).hexdigest()

    all_headers = {name.lower(): " ".join(value.split()) for name, value in (headers or {}).items()}
    all_headers |= {
        "host": parts.netloc,
        "x-amz-content-sha256": payload_hash,
        "x-amz-date": amz_date,
    }
    names = sorted(all_headers)
    canonical_request = "\n".join(
        [
            method,
            parts.path or "/",
            _canonical_query(parts.query),
            "".join(f"{name}:{all_headers[name]}\n" for name in names),
            ";".join(names),
            payload_hash,
        ]
    )
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = f"AWS4{secret_key}".encode()
    for step in (f"{now:%Y%m%d}", region, service, "aws4_request"):
        key = _hmac(key, step)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    all_headers["authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return all_headers
