"""The test run's private SeaweedFS starts again on other ports when a port it was given is
taken before weed binds it (tests/s3.py)."""

from __future__ import annotations

import socket

import aioboto3
import pytest

from tests import s3 as s3_module

pytestmark = pytest.mark.integration


async def test_a_port_taken_before_weed_binds_it_means_another_start_on_other_ports(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    chosen = s3_module._distinct_free_ports
    calls: list[list[int]] = []
    with socket.create_server(("127.0.0.1", 0)) as squatter:  # another process's server
        taken = int(squatter.getsockname()[1])

        def ports(count: int) -> list[int]:
            picked = chosen(count)
            if not calls:
                picked[0] = taken  # the S3 port, taken between choosing and binding
            calls.append(picked)
            return picked

        monkeypatch.setattr(s3_module, "_distinct_free_ports", ports)
        async with s3_module.private_s3() as settings:
            assert len(calls) == 2
            assert settings.s3_endpoint_url == f"http://127.0.0.1:{calls[1][0]}"
            assert settings.s3_secret_key is not None
            session = aioboto3.Session()
            async with session.client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.s3_region,
                aws_access_key_id=settings.s3_access_key,
                aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
            ) as client:
                assert "Buckets" in await client.list_buckets()
    assert "SeaweedFS start 1 of 3 failed" in caplog.text
