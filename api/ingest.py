"""The front door of the ``/v1/tenants/{T}/...`` routes: who is asking, and is the body a
batch at all. Each step refuses with one clear status before the next spends anything:

1. ``Content-Length`` over the limit: 413, before the body is read or the database asked;
2. the bearer token (``services.tokens``): 401 or 403; nothing is written either way;
3. a content type other than ``application/json``: 415;
4. the body, read up to the limit (413 past it, whatever ``Content-Length`` said), decoded as
   JSON: 422 when it is not JSON (or nested past the decoder's depth); integers too long to be
   numbers become :class:`services.events.HugeNumber` so only their event is rejected;
5. a batch: an object with exactly ``events``, a non-empty list (422), of at most the limit's
   events (413).

What is inside each event is the service's judgement (:func:`services.events.parse_event`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from fastapi import HTTPException, Request, status

from db.repository import Database
from services.events import HugeNumber, IncomingEvent, MalformedEvent, parse_event
from services.tokens import TokenVerdict, authenticate, bearer_token

# Digits (sign aside) beyond which a JSON integer is not read as a number at all.
_MAX_INTEGER_DIGITS: Final = 19


@dataclass(frozen=True)
class IngestLimits:
    max_body_bytes: int = 8 * 1024 * 1024
    max_events: int = 10_000


def _refuse(code: int, detail: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(code, detail, headers=headers)


async def authorized_tenant(
    db: Database, limits: IngestLimits, tenant_path: str, request: Request
) -> UUID:
    """The tenant the URL names, if the request's bearer token is one of its valid tokens."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _refuse(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"body of {declared} bytes is over the limit of {limits.max_body_bytes}",
        )
    try:
        tenant_id = UUID(tenant_path)
    except ValueError:
        raise _refuse(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "tenant id in the path is not a UUID"
        ) from None
    verdict = await authenticate(db, tenant_id, bearer_token(request.headers.get("authorization")))
    if verdict is TokenVerdict.UNAUTHENTICATED:
        raise _refuse(
            status.HTTP_401_UNAUTHORIZED,
            "missing, unknown, expired or revoked API token (Authorization: Bearer <token>;"
            " `rai token create --tenant T`)",
            {"WWW-Authenticate": "Bearer"},
        )
    if verdict is TokenVerdict.OTHER_TENANT:
        raise _refuse(status.HTTP_403_FORBIDDEN, f"this token may not send for tenant {tenant_id}")
    return tenant_id


def _parse_int(digits: str) -> int | HugeNumber:
    if len(digits.lstrip("-")) > _MAX_INTEGER_DIGITS:
        return HugeNumber(digits)
    return int(digits)


async def read_json_body(request: Request, limits: IngestLimits) -> Any:
    """The request's JSON body, read no further than the limit."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise _refuse(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send application/json, not {media_type or 'no content type'}",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise _refuse(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"body is over the limit of {limits.max_body_bytes} bytes",
            )
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks), parse_int=_parse_int)
    except RecursionError:
        raise _refuse(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "malformed JSON: nested too deeply"
        ) from None
    except ValueError as exc:  # JSONDecodeError, and bytes that are not UTF-8/16/32
        raise _refuse(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"malformed JSON: {str(exc)[:200]}"
        ) from None


def batch_events(body: Any, limits: IngestLimits) -> list[IncomingEvent | MalformedEvent]:
    if not isinstance(body, dict) or set(body) != {"events"}:
        raise _refuse(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            'a batch is a JSON object with one key, "events"',
        )
    raw_events = body["events"]
    if not isinstance(raw_events, list) or not raw_events:
        raise _refuse(status.HTTP_422_UNPROCESSABLE_CONTENT, '"events" is a non-empty list')
    if len(raw_events) > limits.max_events:
        raise _refuse(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{len(raw_events)} events is over the limit of {limits.max_events} per batch",
        )
    return [parse_event(raw) for raw in raw_events]


def single_event(body: Any) -> IncomingEvent | MalformedEvent:
    if not isinstance(body, dict):
        raise _refuse(status.HTTP_422_UNPROCESSABLE_CONTENT, "an event is a JSON object")
    return parse_event(body)
