"""``python -m trainer``: the training job's process entrypoint and composition root.

Exit codes: 0 SUCCEEDED, 1 FAILED (the result file says why), 2 unusable command line
(argparse's usage error; no result file can be trusted then). Logs go to stderr as one JSON
object per line, the form a cluster's log collector parses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from pydantic import ValidationError

from domain.holdout import DEFAULT_HOLDOUT_FRACTION
from domain.training import DEFAULT_L2_LAMBDA, TrainingJobArgs, TrainingResult
from trainer.job import TrainerSettings, exit_code, run_job, write_result_file

logger = logging.getLogger("trainer")


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Fit a ridge model on a dataset snapshot; write artifact, metrics, result.",
    )
    parser.add_argument("--tenant-id", type=UUID, required=True)
    parser.add_argument("--training-run-id", type=UUID, required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--dataset-uri", required=True, help="s3://bucket/key?versionId=V")
    parser.add_argument("--dataset-sha256", required=True, help="lowercase hex")
    parser.add_argument("--output-prefix", required=True, help="s3://bucket/prefix/")
    parser.add_argument("--callback-url", help="POST the signed completion callback here")
    parser.add_argument("--l2-lambda", type=float, default=DEFAULT_L2_LAMBDA)
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        default=DEFAULT_HOLDOUT_FRACTION,
        help="share of fields never trained on (validation metrics and the bias audit)",
    )
    parser.add_argument("--result-file", type=Path, required=True)
    return parser


def parse_command_line(argv: Sequence[str] | None = None) -> tuple[TrainingJobArgs, Path]:
    namespace = build_parser().parse_args(argv)
    args = TrainingJobArgs(
        tenant_id=namespace.tenant_id,
        training_run_id=namespace.training_run_id,
        model_name=namespace.model_name,
        dataset_uri=namespace.dataset_uri,
        dataset_sha256=namespace.dataset_sha256,
        output_prefix=namespace.output_prefix,
        callback_url=namespace.callback_url,
        l2_lambda=namespace.l2_lambda,
        holdout_fraction=namespace.holdout_fraction,
    )
    return args, namespace.result_file


def _settings_problem(exc: ValidationError) -> str:
    # Without the offending input: the environment also holds secrets.
    problems = "; ".join(
        f"RAI_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
        for error in exc.errors(include_input=False)
    )
    return f"configuration: {problems}"


def _fail(result_file: Path, error: str) -> int:
    result = TrainingResult.failed(error)
    try:
        write_result_file(result_file, result)
    except OSError:
        logger.exception("could not write the result file %s", result_file)
    return exit_code(result)


def main(argv: Sequence[str] | None = None) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    args, result_file = parse_command_line(argv)
    logger.info("training run %s (tenant %s) started", args.training_run_id, args.tenant_id)
    try:
        settings = TrainerSettings()
    except ValidationError as exc:
        error = _settings_problem(exc)
        logger.error("%s", error)
        return _fail(result_file, error)
    try:
        result = asyncio.run(run_job(args, settings, result_file=result_file, handle_sigterm=True))
    except Exception as exc:
        # A bug, not a job failure: keep the traceback in the log, and still leave a result
        # that says FAILED so the launcher need not guess from a missing file.
        logger.exception("the trainer crashed")
        return _fail(result_file, f"internal error: {type(exc).__name__}: {exc}")
    logger.info("training run %s finished: %s", args.training_run_id, result.status.value)
    return exit_code(result)


if __name__ == "__main__":
    sys.exit(main())
