"""``rai drift compare REFERENCE.csv CURRENT.csv [--json]``: the services' drift analysis
(:func:`domain.drift.analyze_drift`, same thresholds), offline on two CSV files for analysts.

Both files need a header row naming the same columns (in any order). A column is numeric when
every non-empty cell of it, in both files, parses as a float, otherwise categorical; deciding
over both files keeps one column from being numeric on one side and categorical on the other.
Cells are stripped of surrounding blanks; empty cells are missing values, skipped for that
column only. The exit status is 0 whatever the verdict (the command reports, it does not gate a
pipeline); unreadable or mismatched input exits 1 with a one-line error.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cli.common import app_database, object_store, parse_tenant, trusted_keys, uuid_argument
from cli.errors import CommandError, NotFound
from cli.output import add_json_flag, print_json
from settings import Settings

if TYPE_CHECKING:
    from domain.drift import DriftResult, FeatureDrift


def register(groups: Any) -> None:
    parser = groups.add_parser("drift", help="drift statistics: PSI, KL, KS and chi-square")
    commands = parser.add_subparsers(dest="drift_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "compare",
        help="compare two CSV samples feature by feature (exit 0 whatever the verdict)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("reference", type=Path, metavar="REFERENCE.csv", help="the reference sample")
    p.add_argument("current", type=Path, metavar="CURRENT.csv", help="the current sample")
    p.add_argument("--html", type=Path, metavar="FILE", help="also write the comparison as a page")
    add_json_flag(p)
    p.set_defaults(handler=run_compare)
    r = commands.add_parser(
        "report",
        help="a stored drift report: verdict, per-feature figures and signature status;"
        " --html FILE writes it as one self-contained page (exit 3 if the tenant has no such"
        " report)",
    )
    r.add_argument("report_id", type=uuid_argument("drift report id"), metavar="ID")
    r.add_argument("--tenant", required=True, type=parse_tenant, help="tenant id (UUID)")
    r.add_argument("--html", type=Path, metavar="FILE", help="write the report as an HTML page")
    add_json_flag(r)
    r.set_defaults(handler=run_report)


def run_compare(args: argparse.Namespace, settings: Settings) -> int:
    # scipy (under domain.drift) takes seconds to import: only this command loads it here.
    from domain.drift import analyze_drift

    reference_columns = read_csv_columns(args.reference)
    current_columns = read_csv_columns(args.current)
    only_reference = sorted(reference_columns.keys() - current_columns.keys())
    only_current = sorted(current_columns.keys() - reference_columns.keys())
    if only_reference or only_current:
        raise CommandError(
            f"the files have different columns: only in {args.reference}: {only_reference},"
            f" only in {args.current}: {only_current}"
        )
    reference: dict[str, npt.NDArray[Any]] = {}
    current: dict[str, npt.NDArray[Any]] = {}
    for name, reference_cells in reference_columns.items():
        current_cells = current_columns[name]
        numeric = all(_is_float(cell) for cell in (*reference_cells, *current_cells))
        reference[name] = _column_array(reference_cells, numeric)
        current[name] = _column_array(current_cells, numeric)
    try:
        result = analyze_drift(reference, current)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if args.html is not None:
        from domain.drift_page import PageContext, render_drift_page

        page = render_drift_page(
            result,
            PageContext(
                title="Drift comparison",
                lines=(f"Reference {args.reference}, current {args.current}",),
                signature_ok=None,
                signature_detail="none: a local comparison of two CSV files, not a signed report",
            ),
        )
        write_page(args.html, page)
    if args.json:
        print(json.dumps(result_json(result), indent=2))
    else:
        print(result_table(result))
    return 0


def write_page(path: Path, page: str) -> None:
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from exc


def run_report(args: argparse.Namespace, settings: Settings) -> int:
    from services.drift_reports import DriftReportReader, DriftReportView
    from services.errors import GovernanceRefusal, NotFoundError

    trusted = trusted_keys(settings)

    async def read() -> DriftReportView:
        async with app_database(settings) as db, object_store(settings) as store:
            return await DriftReportReader(db, store, trusted).read(args.tenant, args.report_id)

    try:
        view = asyncio.run(read())
    except NotFoundError as exc:
        raise NotFound(str(exc)) from None
    except GovernanceRefusal as exc:
        raise CommandError(str(exc)) from None
    if args.html is not None:
        write_page(args.html, view.html())
    if args.json:
        print_json({**view.summary(), "html": str(args.html) if args.html else None})
        return 0
    print(result_table(view.result))
    status = "verified" if view.signature_ok else "NOT VERIFIED"
    print(f"signature: {status} ({view.signature_detail})")
    if args.html is not None:
        print(f"page: {args.html}")
    return 0


def read_csv_columns(path: Path) -> dict[str, list[str]]:
    """Non-empty cells per column, in file order."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise CommandError(f"{path}: empty file, expected a header row")
            names = [name.strip() for name in header]
            if any(not name for name in names):
                raise CommandError(f"{path}: the header has a blank column name")
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise CommandError(f"{path}: duplicate columns {duplicates}")
            columns: dict[str, list[str]] = {name: [] for name in names}
            for row in reader:
                if not row:
                    continue
                if len(row) != len(names):
                    raise CommandError(
                        f"{path}, line {reader.line_num}: {len(row)} fields,"
                        f" the header has {len(names)}"
                    )
                for name, cell in zip(names, row, strict=True):
                    value = cell.strip()
                    if value:
                        columns[name].append(value)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CommandError(f"{path}: not a readable UTF-8 CSV file ({exc})") from exc
    return columns


def _is_float(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _column_array(cells: list[str], numeric: bool) -> npt.NDArray[Any]:
    if numeric:
        return np.array([float(cell) for cell in cells], dtype=np.float64)
    return np.array(cells, dtype=object)


def result_json(result: DriftResult) -> dict[str, Any]:
    return {
        "features": {
            feature.name: {
                "psi": feature.psi,
                "kl": feature.kl,
                "ks_d": feature.ks_d,
                "ks_p": feature.ks_p,
                "chi2": feature.chi2,
                "chi2_p": feature.chi2_p,
                "verdict": feature.verdict.value,
            }
            for feature in result.features
        },
        "verdict": result.verdict.value,
    }


def result_table(result: DriftResult) -> str:
    header = ("feature", "kind", "n ref", "n cur", "PSI", "KL", "KS D / chi2", "p-value", "verdict")
    rows = [header, *(_table_row(feature) for feature in result.features)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    limits = result.thresholds
    lines.append(
        f"verdict: {result.verdict.value} (p-value below {limits.alpha:g}/{len(result.features)}"
        f" = {result.per_feature_alpha:.4g} and PSI >= {limits.psi_floor:g} is drift; more than"
        f" {limits.min_events} values per sample needed)"
    )
    return "\n".join(lines)


def _table_row(feature: FeatureDrift) -> tuple[str, ...]:
    from domain.drift import FeatureKind

    if feature.kind is FeatureKind.NUMERIC:
        statistic, p_value = f"D {feature.ks_d:.4f}", feature.ks_p
    else:
        statistic, p_value = f"chi2 {feature.chi2:.2f}", feature.chi2_p
    return (
        feature.name,
        feature.kind.value,
        str(feature.n_reference),
        str(feature.n_current),
        f"{feature.psi:.4f}",
        f"{feature.kl:.4f}",
        statistic,
        f"{p_value:.3g}",
        feature.verdict.value,
    )
