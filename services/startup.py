"""What ``rai worker`` checks before it starts: a deployment that cannot be correct with several
workers is refused with one line naming the setting to fix.

* The platform key (with ``RAI_JOB_RUNNER=kubernetes``): every worker must sign with the same
  key, or the callbacks of jobs launched by another worker are refused; so it must be given
  (``RAI_PLATFORM_SIGNING_KEY``, or ``RAI_PLATFORM_KEY_FILE`` naming an existing file, e.g. a
  mounted Secret) and is never created by a worker in that mode.
* The Kubernetes runner's own settings and client configuration (image, requests <= limits, a
  service account or a kubeconfig).
* Redis (M5, unless ``RAI_REDIS_REQUIRE_AOF=false``): the pipeline lease must survive a Redis
  restart and must never be evicted, so the append-only file must be on and the
  ``maxmemory-policy`` must be ``noeviction``. The ``volatile-*`` policies are refused too: they
  evict keys that have a TTL, and the lease keys do. Read with ``INFO`` rather than
  ``CONFIG GET``, which managed Redis services often disable.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain.signing import KeyMaterialError, Signer
from settings import Settings, redacted_dsn

REDIS_TIMEOUT_SECONDS = 5.0


class WorkerStartRefused(Exception):
    """The worker must not start with these settings (the message says which one)."""


def platform_key_problem(settings: Settings) -> str | None:
    """Why the platform key is not usable by a deployed worker (None if it is, or if the
    runner is local, where a worker may create one)."""
    if settings.job_runner != "kubernetes":
        return None
    mode = "with RAI_JOB_RUNNER=kubernetes"
    if settings.platform_signing_key is not None:
        try:
            Signer.from_hex(settings.platform_signing_key.get_secret_value())
        except KeyMaterialError as exc:
            return f"RAI_PLATFORM_SIGNING_KEY is not a usable key: {exc}"
        return None
    path = settings.platform_key_file
    if path is None:
        return (
            f"RAI_PLATFORM_SIGNING_KEY or RAI_PLATFORM_KEY_FILE is required {mode}: every worker"
            " must sign with the same platform key, so a worker never creates one"
        )
    if not path.is_file():
        return (
            f"RAI_PLATFORM_KEY_FILE={path} does not exist ({mode} a worker never creates the"
            " platform key: mount the shared one there)"
        )
    try:
        Signer.from_hex(path.read_text(encoding="ascii"))
    except (KeyMaterialError, OSError, UnicodeDecodeError) as exc:
        return f"RAI_PLATFORM_KEY_FILE={path} holds no usable key: {exc}"
    return None


def job_runner_problem(settings: Settings) -> str | None:
    """Why the configured job runner cannot be opened (None if it can be tried)."""
    if settings.job_runner != "kubernetes":
        return None
    # The Kubernetes client is a large import that only this mode needs.
    from adapters.k8sjobs import KubernetesJobConfig, kubeconfig_problem

    try:
        KubernetesJobConfig.from_settings(settings)
    except ValueError as exc:
        return str(exc)
    return kubeconfig_problem(settings)


async def redis_problem(settings: Settings) -> str | None:
    """Why the Redis at ``redis_url`` could lose the pipeline lease (None if it cannot, or if
    ``redis_require_aof`` is off)."""
    if not settings.redis_require_aof:
        return None
    where = f"Redis at {redacted_dsn(settings.redis_url)}"
    allow = "or set RAI_REDIS_REQUIRE_AOF=false for a development Redis"
    client: Redis = Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        persistence = await client.info("persistence")
        memory = await client.info("memory")
    except (RedisError, OSError) as exc:
        return f"cannot check the {where} (RAI_REDIS_URL): {type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    if not int(persistence.get("aof_enabled", 0)):
        return (
            f"{where} has appendonly off: the pipeline lease would not survive a Redis restart"
            f" (M5); turn on appendonly, {allow}"
        )
    policy = memory.get("maxmemory_policy")
    if policy != "noeviction":
        return (
            f"{where} has maxmemory-policy {policy}, which may evict the pipeline lease keys;"
            f" use noeviction, {allow}"
        )
    return None


async def check_worker_start(settings: Settings) -> None:
    """Raise :class:`WorkerStartRefused` with the first problem found."""
    problem = (
        platform_key_problem(settings)
        or job_runner_problem(settings)
        or await redis_problem(settings)
    )
    if problem is not None:
        raise WorkerStartRefused(problem)
