"""The training job's I/O: dataset in, artifact and metrics out, result file, signed callback.

The command line and the environment are the job's contract with its launchers
(:mod:`domain.training`); ``__main__`` parses the one and reads the other through
:class:`TrainerSettings`. ``RAI_TRAINING_EXTRA_SECONDS`` (simulated GPU time) is slept after the
dataset is read and before any output is written, so a chaos test can kill things mid-training.

Steps: read the dataset object at its pinned version; refuse it unless its SHA-256 is the one
given; parse and fit (``trainer.model``); write ``{prefix}model.json`` (the artifact, format
:mod:`domain.ridge`) and ``{prefix}metrics.json``, and read the artifact back to hash what S3
actually stored; write the result file atomically; then, with ``--callback-url``, POST the
signed callback (:func:`domain.training.callback_body`). Every expected failure (bad arguments,
hash mismatch, unparsable snapshot, no labelled rows, S3 errors) ends as a FAILED result with a
readable ``error``, exit code 1. A failed callback does not fail the job: the result file (and
the launcher's polling) is the fallback.

SIGTERM (what Kubernetes sends when a Job's pod is deleted, and what the local job runner's
``cancel`` sends) cancels the training step; the job still writes a FAILED result and calls
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import signal
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr

from adapters.callback_client import post_callback
from adapters.objectstore import InvalidS3UriError, ObjectStore, ObjectStoreError, S3Uri
from domain.canonical import canonical_json, sha256_hex
from domain.holdout import HoldoutFractionError, HoldoutSplit, check_holdout_fraction
from domain.signing import KeyMaterialError, Signer
from domain.training import (
    CALLBACK_KEY_ENV,
    TrainingJobArgs,
    TrainingResult,
    TrainingStatus,
    callback_body,
)
from settings import Settings
from trainer.model import SnapshotError, TrainingError, fit_ridge, parse_snapshot

logger = logging.getLogger(__name__)

ARTIFACT_NAME: Final = "model.json"
METRICS_NAME: Final = "metrics.json"

# The database's rule for model names (model_versions_model_name_format); checked here too so a
# bad name fails the job up front instead of after the GPU time.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class TrainerSettings(Settings):
    """The platform settings plus the job's own two knobs (same ``RAI_`` prefix)."""

    callback_signing_key: SecretStr | None = None
    training_extra_seconds: float = Field(default=0.0, ge=0, allow_inf_nan=False)


# -- training -------------------------------------------------------------------------------


def parse_output_prefix(text: str) -> tuple[str, str]:
    """(bucket, key prefix) of ``s3://bucket/prefix/``. A prefix not ending in "/" gets one:
    the outputs are always ``{prefix}model.json`` and ``{prefix}metrics.json``."""
    parts = urlsplit(text)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise InvalidS3UriError(f"not an s3://bucket/prefix/ output prefix: {text!r}")
    prefix = unquote(parts.path.removeprefix("/"))
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return parts.netloc, prefix


def _check_arguments(args: TrainingJobArgs) -> str | None:
    """Why the arguments cannot work (None if they can), before anything is read."""
    if not _MODEL_NAME.fullmatch(args.model_name):
        return f"--model-name {args.model_name!r} is not a valid model name"
    if not _SHA256_HEX.fullmatch(args.dataset_sha256):
        return "--dataset-sha256 must be 64 lowercase hex digits"
    if not (math.isfinite(args.l2_lambda) and args.l2_lambda >= 0):
        return f"--l2-lambda must be a finite number >= 0, not {args.l2_lambda}"
    try:
        check_holdout_fraction(args.holdout_fraction)
    except HoldoutFractionError as exc:
        return f"--holdout-fraction: {exc}"
    if args.callback_url is not None and urlsplit(args.callback_url).scheme not in (
        "http",
        "https",
    ):
        return f"--callback-url must be an http(s) URL, not {args.callback_url!r}"
    try:
        S3Uri.parse(args.dataset_uri)
        parse_output_prefix(args.output_prefix)
    except InvalidS3UriError as exc:
        return str(exc)
    return None


async def train(
    args: TrainingJobArgs, settings: Settings, *, extra_seconds: float = 0.0
) -> TrainingResult:
    """Read, verify, fit, write. Never raises for the failures a job can meet; it reports them
    as a FAILED result (bugs still raise)."""
    problem = _check_arguments(args)
    if problem is not None:
        return TrainingResult.failed(problem)
    dataset = S3Uri.parse(args.dataset_uri)
    bucket, prefix = parse_output_prefix(args.output_prefix)
    try:
        async with ObjectStore.from_settings(settings) as store:
            data = await store.get_bytes(dataset.bucket, dataset.key, dataset.version_id)
            actual = await asyncio.to_thread(sha256_hex, data)
            if actual != args.dataset_sha256:
                return TrainingResult.failed(
                    f"dataset SHA-256 mismatch: {dataset} hashes to {actual}, "
                    f"expected {args.dataset_sha256}"
                )
            logger.info("dataset %s read (%d bytes, SHA-256 verified)", dataset, len(data))
            events = await asyncio.to_thread(parse_snapshot, data)
            fit = await asyncio.to_thread(
                fit_ridge,
                events,
                l2_lambda=args.l2_lambda,
                holdout=HoldoutSplit(args.holdout_fraction),
            )
            logger.info(
                "fitted on %d events, validated on %d held-out events",
                fit.metrics["n_train"],
                fit.metrics["n_validation"],
            )
            if extra_seconds > 0:
                logger.info("simulating %.1f s of GPU time", extra_seconds)
                await asyncio.sleep(extra_seconds)

            artifact = fit.model.to_bytes()
            artifact_sha256 = sha256_hex(artifact)
            metadata = {
                "tenant-id": str(args.tenant_id),
                "training-run-id": str(args.training_run_id),
                "model-name": args.model_name,
                "dataset-sha256": args.dataset_sha256,
            }
            stored = await store.put_bytes(
                bucket,
                prefix + ARTIFACT_NAME,
                artifact,
                content_type="application/json",
                metadata={**metadata, "content-sha256": artifact_sha256},
            )
            await store.put_bytes(
                bucket,
                prefix + METRICS_NAME,
                canonical_json(fit.metrics),
                content_type="application/json",
                metadata=metadata,
            )
            # Hash what the store now holds at that version, not what we meant to send: the
            # registry will check exactly this.
            digest = await store.stream_sha256(bucket, stored.key, stored.version_id)
    except (ObjectStoreError, SnapshotError, TrainingError) as exc:
        return TrainingResult.failed(f"{type(exc).__name__}: {exc}")
    if digest.sha256_hex != artifact_sha256:
        return TrainingResult.failed(
            f"the stored artifact {stored.uri} hashes to {digest.sha256_hex}, not {artifact_sha256}"
        )
    logger.info("artifact %s written (SHA-256 %s)", stored.uri, artifact_sha256)
    return TrainingResult(
        status=TrainingStatus.SUCCEEDED,
        artifact_uri=str(stored.uri),
        artifact_sha256=artifact_sha256,
        metrics=fit.metrics,
    )


def write_result_file(path: Path, result: TrainingResult) -> None:
    """Write the result so that a reader sees either nothing or all of it (temporary file in
    the same directory, flushed to disk, renamed over the target).

    Where no temporary file can be made beside the target or renamed over it, the target is
    written in place: that is Kubernetes' termination-message file (``/dev/termination-log``),
    a file the kubelet mounts into a directory the job may not write, and reads only after the
    container has exited."""
    data = canonical_json(result.model_dump(mode="json")) + b"\n"
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_synced(temporary, data)
        temporary.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        _write_synced(path, data)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


async def _train_until_terminated(
    args: TrainingJobArgs, settings: Settings, extra_seconds: float
) -> TrainingResult:
    """``train``, cancelled by SIGTERM into a FAILED result."""
    loop = asyncio.get_running_loop()
    training = asyncio.ensure_future(train(args, settings, extra_seconds=extra_seconds))
    loop.add_signal_handler(signal.SIGTERM, training.cancel)
    try:
        return await training
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not training.cancelled() or (current is not None and current.cancelling()):
            raise  # we are being cancelled ourselves, not by SIGTERM
        return TrainingResult.failed("terminated by SIGTERM before training finished")
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def run_job(
    args: TrainingJobArgs,
    settings: TrainerSettings,
    *,
    result_file: Path,
    handle_sigterm: bool = False,
) -> TrainingResult:
    """The whole job: train, write the result file, call back. Returns the result; the caller
    turns it into the exit code. ``handle_sigterm`` is for the process entrypoint only (it
    installs a signal handler on the running loop)."""
    signer: Signer | None = None
    result: TrainingResult | None = None
    if args.callback_url is not None:
        if settings.callback_signing_key is None:
            result = TrainingResult.failed(f"{CALLBACK_KEY_ENV} is required with --callback-url")
        else:
            try:
                signer = Signer.from_hex(settings.callback_signing_key.get_secret_value())
            except KeyMaterialError as exc:
                result = TrainingResult.failed(f"{CALLBACK_KEY_ENV}: {exc}")
    if result is None:
        extra = settings.training_extra_seconds
        if handle_sigterm:
            result = await _train_until_terminated(args, settings, extra)
        else:
            result = await train(args, settings, extra_seconds=extra)
    if result.status is TrainingStatus.FAILED:
        logger.error("training failed: %s", result.error)

    try:
        await asyncio.to_thread(write_result_file, result_file, result)
    except OSError as exc:
        logger.error("could not write the result file %s: %s", result_file, exc)
        result = TrainingResult.failed(f"could not write the result file: {exc}")
    if args.callback_url is not None and signer is not None:
        body = callback_body(
            tenant_id=args.tenant_id,
            training_run_id=args.training_run_id,
            result=result,
            signer=signer,
        )
        await post_callback(args.callback_url, body)
    return result


def exit_code(result: TrainingResult) -> int:
    return 0 if result.status is TrainingStatus.SUCCEEDED else 1
