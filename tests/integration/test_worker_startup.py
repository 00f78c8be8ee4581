"""``rai worker`` refuses settings that cannot be right with several workers: no shared
platform key with the Kubernetes runner (and never creates one), an unusable Kubernetes
configuration, a Redis without AOF or with an evicting policy (real redis-server processes)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import RedisError

from devstack.binaries import find_binary
from devstack.net import free_port
from devstack.redis import REDIS_HINT, redis_server_argv
from domain.signing import Signer
from services.startup import (
    WorkerStartRefused,
    check_worker_start,
    job_runner_problem,
    platform_key_problem,
    redis_problem,
)
from settings import Settings
from tests.ports import refusing_port

pytestmark = pytest.mark.integration

IMAGE = "registry.example/rai-trainer:1.0"


def kubernetes_settings(tmp_path: Path, **overrides: object) -> Settings:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    values: dict[str, object] = {
        "job_runner": "kubernetes",
        "trainer_image": IMAGE,
        "kubeconfig": kubeconfig,
        "state_dir": tmp_path / "state",
        "redis_require_aof": False,
        **overrides,
    }
    return Settings.model_validate(values)


def test_the_kubernetes_runner_needs_the_shared_platform_key(tmp_path: Path) -> None:
    settings = kubernetes_settings(tmp_path)
    # The default key file exists (a local run made it): it is still not the shared key.
    default_file = settings.resolved_platform_key_file()
    default_file.parent.mkdir(parents=True)
    default_file.write_text(Signer.generate().seed_hex())
    problem = platform_key_problem(settings)
    assert problem is not None
    assert problem.startswith(
        "RAI_PLATFORM_SIGNING_KEY or RAI_PLATFORM_KEY_FILE is required with"
        " RAI_JOB_RUNNER=kubernetes"
    )
    missing = tmp_path / "mounted" / "platform.key"
    problem = platform_key_problem(settings.model_copy(update={"platform_key_file": missing}))
    assert problem is not None
    assert problem.startswith(f"RAI_PLATFORM_KEY_FILE={missing} does not exist")
    assert not missing.exists()  # and nothing created it
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not hex")
    problem = platform_key_problem(settings.model_copy(update={"platform_key_file": garbage}))
    assert problem is not None
    assert problem.startswith(f"RAI_PLATFORM_KEY_FILE={garbage} holds no usable key")
    bad = settings.model_copy(update={"platform_signing_key": SecretStr("abc")})
    assert (platform_key_problem(bad) or "").startswith("RAI_PLATFORM_SIGNING_KEY is not")

    mounted = tmp_path / "platform.key"
    mounted.write_text(Signer.generate().seed_hex() + "\n")
    assert platform_key_problem(settings.model_copy(update={"platform_key_file": mounted})) is None
    key = SecretStr(Signer.generate().seed_hex())
    assert platform_key_problem(settings.model_copy(update={"platform_signing_key": key})) is None
    # The local runner may create its own key.
    assert platform_key_problem(Settings(state_dir=tmp_path / "local")) is None


def test_the_kubernetes_runner_needs_its_image_and_a_client_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = kubernetes_settings(tmp_path)
    assert job_runner_problem(settings) is None
    assert job_runner_problem(settings.model_copy(update={"trainer_image": None})) == (
        "RAI_TRAINER_IMAGE is required with RAI_JOB_RUNNER=kubernetes"
    )
    missing = tmp_path / "nowhere" / "config"
    problem = job_runner_problem(settings.model_copy(update={"kubeconfig": missing}))
    assert problem is not None
    assert problem.startswith(f"no kubeconfig at {missing}")
    assert "RAI_KUBECONFIG" in problem
    # In a pod the service account is used; a pod without its token cannot be.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    problem = job_runner_problem(settings.model_copy(update={"kubeconfig": missing}))
    assert problem is not None
    assert "without a service account token" in problem
    assert job_runner_problem(Settings()) is None  # the local runner


@pytest.fixture
async def redis_servers(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Three real redis-servers: the dev stack's own (AOF on, default policy), one with AOF off
    and one with AOF on but evicting keys that have a TTL."""
    binary = find_binary("redis-server", REDIS_HINT)
    extra = {
        "devstack": [],
        "no-aof": ["--appendonly", "no"],
        "volatile-lru": ["--maxmemory-policy", "volatile-lru", "--maxmemory", "64mb"],
    }
    processes: list[asyncio.subprocess.Process] = []
    urls: dict[str, str] = {}
    try:
        for name, options in extra.items():
            port = free_port()
            data = tmp_path / f"redis-{name}"
            data.mkdir()
            argv = [*redis_server_argv(binary, data_dir=data, port=port), "--save", "", *options]
            processes.append(
                await asyncio.create_subprocess_exec(
                    *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
                )
            )
            urls[name] = f"redis://127.0.0.1:{port}/0"
        for url in urls.values():
            await _until_ping(url)
        yield urls
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
                await process.wait()


async def _until_ping(url: str) -> None:
    client: Redis = Redis.from_url(url)
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    await client.ping()
                    return
                except (RedisError, OSError):
                    await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"redis-server at {url} did not answer within 30 s")
    finally:
        await client.aclose()


async def test_redis_must_keep_the_lease(redis_servers: dict[str, str]) -> None:
    def settings(name: str, **more: object) -> Settings:
        return Settings.model_validate({"redis_url": redis_servers[name], **more})

    assert await redis_problem(settings("devstack")) is None
    no_aof = await redis_problem(settings("no-aof"))
    assert no_aof is not None
    assert no_aof.startswith(f"Redis at {redis_servers['no-aof']} has appendonly off")
    assert "RAI_REDIS_REQUIRE_AOF=false" in no_aof
    evicting = await redis_problem(settings("volatile-lru"))
    assert evicting is not None
    assert "maxmemory-policy volatile-lru, which may evict the pipeline lease keys" in evicting
    assert "RAI_REDIS_REQUIRE_AOF=false" in evicting
    # A development Redis, allowed explicitly.
    assert await redis_problem(settings("no-aof", redis_require_aof=False)) is None
    with refusing_port() as port:
        unreachable = await redis_problem(Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
    assert unreachable is not None
    assert unreachable.startswith("cannot check the Redis at")
    assert "(RAI_REDIS_URL)" in unreachable


async def test_the_first_problem_refuses_the_start(
    tmp_path: Path, redis_servers: dict[str, str]
) -> None:
    settings = kubernetes_settings(tmp_path, redis_url=redis_servers["no-aof"])
    with pytest.raises(WorkerStartRefused, match="RAI_PLATFORM_SIGNING_KEY or"):
        await check_worker_start(settings)
    keyed = settings.model_copy(
        update={
            "platform_signing_key": SecretStr(Signer.generate().seed_hex()),
            "redis_require_aof": True,
        }
    )
    with pytest.raises(WorkerStartRefused, match="appendonly off"):
        await check_worker_start(keyed)
    await check_worker_start(keyed.model_copy(update={"redis_url": redis_servers["devstack"]}))


async def rai_worker(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "worker",
        env={k: v for k, v in os.environ.items() if not k.startswith("RAI_")} | env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(120):
            _, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail("rai worker neither refused nor stopped within 120 s")
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_rai_worker_refuses_in_one_line_and_creates_no_key(
    tmp_path: Path, redis_servers: dict[str, str]
) -> None:
    state = tmp_path / "state"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    code, err = await rai_worker(
        {
            "RAI_JOB_RUNNER": "kubernetes",
            "RAI_TRAINER_IMAGE": IMAGE,
            "RAI_KUBECONFIG": str(kubeconfig),
            "RAI_STATE_DIR": str(state),
            "RAI_REDIS_URL": redis_servers["devstack"],
        },
        tmp_path,
    )
    assert code == 1, err
    assert err.count("\n") == 1, err
    assert err.startswith(
        "rai: error: RAI_PLATFORM_SIGNING_KEY or RAI_PLATFORM_KEY_FILE is required with"
        " RAI_JOB_RUNNER=kubernetes"
    ), err
    assert not state.exists() or not any(state.rglob("*.ed25519")), "a key was created"

    code, err = await rai_worker(
        {"RAI_STATE_DIR": str(state), "RAI_REDIS_URL": redis_servers["no-aof"]}, tmp_path
    )
    assert code == 1, err
    assert err.count("\n") == 1, err
    assert err.startswith(f"rai: error: Redis at {redis_servers['no-aof']} has appendonly off")
