"""The HTTP client a training job calls back with: POST a signed callback, retrying what a
retry can cure."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import aiohttp

logger = logging.getLogger(__name__)

CALLBACK_ATTEMPTS: Final = 4
CALLBACK_FIRST_RETRY_SECONDS: Final = 0.5
CALLBACK_TIMEOUT_SECONDS: Final = 10.0


async def post_callback(
    url: str,
    body: bytes,
    *,
    attempts: int = CALLBACK_ATTEMPTS,
    first_retry_seconds: float = CALLBACK_FIRST_RETRY_SECONDS,
    timeout_seconds: float = CALLBACK_TIMEOUT_SECONDS,
) -> bool:
    """POST ``body``; True once the receiver answers 2xx. Connection errors, timeouts, 429 and
    5xx are retried with exponential backoff; any other answer is final (the receiver has
    judged the callback, resending the same bytes cannot change its mind)."""
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for attempt in range(1, attempts + 1):
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    if response.status < 300:
                        logger.info("callback delivered to %s (HTTP %d)", url, response.status)
                        return True
                    answer = (await response.text())[:300]
                    reason = f"HTTP {response.status}: {answer}"
                    if response.status < 500 and response.status != 429:
                        logger.error("callback to %s refused: %s", url, reason)
                        return False
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                delay = first_retry_seconds * 2 ** (attempt - 1)
                logger.warning(
                    "callback attempt %d/%d to %s failed (%s); retrying in %.1f s",
                    attempt,
                    attempts,
                    url,
                    reason,
                    delay,
                )
                await asyncio.sleep(delay)
    logger.error("callback to %s not delivered after %d attempts: %s", url, attempts, reason)
    return False
