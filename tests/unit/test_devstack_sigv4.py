"""Signatures checked against the worked examples of the AWS S3 documentation
("Signature Calculations for the Authorization Header: Transferring Payload in a Single
Chunk")."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devstack.sigv4 import signed_headers

pytestmark = pytest.mark.unit

# The documentation's published example key pair.
ACCESS_KEY, EXAMPLE_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WHEN = datetime(2013, 5, 24, tzinfo=UTC)


def _signature(url: str, headers: dict[str, str] | None = None) -> str:
    signed = signed_headers(
        method="GET",
        url=url,
        access_key=ACCESS_KEY,
        secret_key=EXAMPLE_SECRET,
        region="us-east-1",
        now=WHEN,
        headers=headers,
    )
    return signed["authorization"].rsplit("Signature=", 1)[1]


def test_get_object_example() -> None:
    url = "https://examplebucket.s3.amazonaws.com/test.txt"
    assert (
        _signature(url, {"Range": "bytes=0-9"})
        == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_get_bucket_lifecycle_example() -> None:
    url = "https://examplebucket.s3.amazonaws.com/?lifecycle"
    assert _signature(url) == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"


def test_list_objects_example_sorts_the_query() -> None:
    url = "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J"
    assert _signature(url) == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"


def test_all_headers_to_send_are_returned() -> None:
    signed = signed_headers(
        method="GET",
        url="http://127.0.0.1:8333/",
        access_key=ACCESS_KEY,
        secret_key=EXAMPLE_SECRET,
        region="us-east-1",
        now=WHEN,
    )
    assert signed["host"] == "127.0.0.1:8333"
    assert signed["x-amz-date"] == "20130524T000000Z"
    assert signed["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="
    )
