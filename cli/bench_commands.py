"""``rai bench drift``: how long the full drift analysis takes, next to plain scipy KS tests;
``rai bench ingest``: signed events per second through the HTTP API (see ``cli.ingest_bench``).

The synthetic data (not timed): every feature's reference sample is standard normal; in the
current sample the even-numbered features keep that distribution and the odd-numbered ones
drift (mean +0.5, standard deviation x1.2). Both timings run on the same arrays in one
process; the command also checks that our KS statistics and p-values equal scipy's.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from cli.errors import CommandError
from cli.output import add_json_flag
from settings import Settings

DEFAULT_SEED = 20240601
# Our KS p-value is computed on the same path as scipy's, so any visible difference is a bug.
_KS_TOLERANCE = 1e-12


def register(groups: Any) -> None:
    parser = groups.add_parser("bench", help="measure the speed of Level D's hot paths")
    commands = parser.add_subparsers(dest="bench_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "drift",
        help="time the full drift analysis (PSI, KL, KS per feature) against a scipy KS loop",
    )
    p.add_argument("--features", type=_positive_int, default=20, help="number of features")
    p.add_argument(
        "--rows", type=_positive_int, default=1_000_000, help="rows per sample (each side)"
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the synthetic data")
    add_json_flag(p)
    p.set_defaults(handler=run_drift_bench)

    p = commands.add_parser(
        "ingest",
        help="signed events/s through the HTTP API, end to end, counted in the database",
    )
    p.add_argument("--seconds", type=_positive_float, default=10.0, help="sending time (10)")
    p.add_argument(
        "--rate", type=_positive_float, help="events/s to offer (default: as fast as answered)"
    )
    p.add_argument("--batch", type=_positive_int, default=500, help="events per request (500)")
    p.add_argument("--concurrency", type=_positive_int, default=4, help="connections in flight (4)")
    p.add_argument(
        "--workers",
        type=_positive_int,
        help="API worker processes to start (default: as `rai api`)",
    )
    p.add_argument("--url", help="an API already serving this database (default: start one)")
    add_json_flag(p)
    p.set_defaults(handler=run_ingest_bench_command)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return number


def run_ingest_bench_command(args: argparse.Namespace, settings: Settings) -> int:
    from api.server import default_workers
    from cli.ingest_bench import run_ingest_bench

    def progress(text: str) -> None:
        if not args.json:
            print(f"  {text}", flush=True)

    workers = args.workers or settings.api_workers or default_workers()
    result = run_ingest_bench(
        settings,
        seconds=args.seconds,
        rate=args.rate,
        batch=args.batch,
        concurrency=args.concurrency,
        workers=workers,
        url=args.url,
        progress=progress,
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['events_per_s']:.0f} events/s (p50 {result['p50_ms']} ms, p99"
            f" {result['p99_ms']} ms per batch of {args.batch}); sent {result['sent']}, stored"
            f" {result['stored']}, lost {result['lost']}, duplicates {result['duplicates']},"
            f" 5xx {result['errors_5xx']}; Ed25519 ceiling {result['verify_ceiling_per_s']:.0f}/s"
            f" (ratio {result['ratio']})"
        )
    return 0 if result["lost"] == 0 and result["errors_5xx"] == 0 else 1


def synthetic_samples(
    features: int, rows: int, seed: int
) -> tuple[dict[str, npt.NDArray[np.float64]], dict[str, npt.NDArray[np.float64]]]:
    rng = np.random.default_rng(seed)
    reference: dict[str, npt.NDArray[np.float64]] = {}
    current: dict[str, npt.NDArray[np.float64]] = {}
    for index in range(features):
        name = f"f{index:02d}"
        reference[name] = rng.standard_normal(rows)
        drifts = index % 2 == 1
        current[name] = rng.normal(0.5 if drifts else 0.0, 1.2 if drifts else 1.0, rows)
    return reference, current


def run_drift_bench(args: argparse.Namespace, settings: Settings) -> int:
    # scipy takes seconds to import: only the commands that compute statistics load it.
    from scipy import stats

    from domain.drift import FeatureKind, Verdict, analyze_drift

    reference, current = synthetic_samples(args.features, args.rows, args.seed)

    started = time.perf_counter()
    result = analyze_drift(reference, current)
    ours_s = time.perf_counter() - started

    started = time.perf_counter()
    # scipy warns when its exact small-sample path falls back to the asymptotic one; the
    # fallback value is what both sides report, so the warning is noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scipy_results = {name: stats.ks_2samp(reference[name], current[name]) for name in reference}
    scipy_ks_s = time.perf_counter() - started

    worst_d = worst_p = 0.0
    for feature in result.features:
        if feature.kind is not FeatureKind.NUMERIC or feature.ks_d is None or feature.ks_p is None:
            raise CommandError(f"feature {feature.name} was not analysed as numeric")
        expected = scipy_results[feature.name]
        worst_d = max(worst_d, abs(feature.ks_d - float(expected.statistic)))
        worst_p = max(worst_p, abs(feature.ks_p - float(expected.pvalue)))
    if worst_d > _KS_TOLERANCE or worst_p > _KS_TOLERANCE:
        raise CommandError(
            f"our KS disagrees with scipy: max |dD| = {worst_d:.3g}, max |dp| = {worst_p:.3g}"
        )

    if args.json:
        figures = {
            "features": args.features,
            "rows": args.rows,
            "ours_s": round(ours_s, 4),
            "scipy_ks_s": round(scipy_ks_s, 4),
        }
        print(json.dumps(figures))
        return 0
    drifting = sum(1 for feature in result.features if feature.verdict is Verdict.DRIFT)
    print(
        f"drift bench: {args.features} features x {args.rows} reference x {args.rows} current rows"
    )
    print(f"  ours (PSI, KL, KS per feature): {ours_s:.3f} s")
    print(f"  scipy.stats.ks_2samp loop:      {scipy_ks_s:.3f} s")
    print(
        f"  KS equal to scipy's (max |dD| = {worst_d:.3g}, max |dp| = {worst_p:.3g});"
        f" {drifting} of {args.features} features drift, verdict {result.verdict}"
    )
    return 0
