"""``rai drift compare`` and ``rai bench drift``, driven through their argument parsers as a
user's command line would be."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cli import bench_commands, drift_commands
from cli.errors import CommandError
from settings import Settings

pytestmark = pytest.mark.e2e


def rai(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="rai")
    groups = parser.add_subparsers(dest="group", required=True)
    drift_commands.register(groups)
    bench_commands.register(groups)
    args = parser.parse_args(argv)
    code: int = args.handler(args, Settings())
    return code


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def samples(tmp_path: Path) -> tuple[Path, Path]:
    """1500 rows each: `yield` drifts, `moisture` (with empty cells) does not, `crop` drifts
    and gains a category, `plot` has too few values to be tested."""
    rng = np.random.default_rng(7)

    def rows(shift: float, crops: list[str]) -> list[list[str]]:
        return [
            [
                f"{rng.normal(shift):.6f}",
                "" if i % 10 == 0 else f"{rng.normal():.6f}",
                crops[int(rng.integers(len(crops)))],
                f"{i}" if i < 900 else "",
            ]
            for i in range(1500)
        ]

    header = ["yield", "moisture", "crop", "plot"]
    reference = write_csv(tmp_path / "ref.csv", header, rows(0.0, ["wheat", "corn", "soy"]))
    # the current file lists its columns in another order
    current_rows = rows(1.0, ["wheat", "rice", "rice"])
    order = [2, 0, 3, 1]
    current = write_csv(
        tmp_path / "cur.csv",
        [header[i] for i in order],
        [[row[i] for i in order] for row in current_rows],
    )
    return reference, current


def test_compare_prints_a_table(
    samples: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert rai("drift", "compare", str(samples[0]), str(samples[1])) == 0
    lines = capsys.readouterr().out.splitlines()
    header = " ".join(lines[0].split())
    assert header == "feature kind n ref n cur PSI KL KS D / chi2 p-value verdict"
    table = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert table["yield"][1:4] == ["numeric", "1500", "1500"]
    assert table["yield"][-1] == "DRIFT"
    assert table["moisture"][1:4] == ["numeric", "1350", "1350"]  # empty cells skipped
    assert table["moisture"][-1] == "NO_DRIFT"
    assert table["crop"][1] == "categorical"
    assert table["crop"][-1] == "DRIFT"
    assert table["plot"][1:4] == ["numeric", "900", "900"]
    assert table["plot"][-1] == "INSUFFICIENT_DATA"
    assert lines[-1].startswith("verdict: DRIFT (p-value below 0.05/4 = 0.0125")


def test_compare_json(samples: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert rai("drift", "compare", str(samples[0]), str(samples[1]), "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {"features", "verdict"}
    assert document["verdict"] == "DRIFT"
    assert list(document["features"]) == ["yield", "moisture", "crop", "plot"]
    for name, feature in document["features"].items():
        assert set(feature) == {"psi", "kl", "ks_d", "ks_p", "chi2", "chi2_p", "verdict"}, name
        assert feature["psi"] >= 0
        assert feature["kl"] >= 0
    crop = document["features"]["crop"]
    assert crop["ks_d"] is None
    assert crop["ks_p"] is None
    assert crop["chi2"] > 0
    assert crop["verdict"] == "DRIFT"
    yield_ = document["features"]["yield"]
    assert 0 < yield_["ks_d"] <= 1
    assert yield_["ks_p"] < 1e-6
    assert yield_["chi2"] is None
    assert yield_["chi2_p"] is None


def test_compare_exits_zero_without_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [[f"{i % 97}", "abc"[i % 3]] for i in range(1200)]
    reference = write_csv(tmp_path / "a.csv", ["x", "c"], rows)
    current = write_csv(tmp_path / "b.csv", ["x", "c"], rows[::-1])
    assert rai("drift", "compare", str(reference), str(current), "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["verdict"] == "NO_DRIFT"
    assert document["features"]["x"]["ks_p"] == 1.0


def test_a_column_with_any_text_is_categorical_in_both_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = write_csv(tmp_path / "a.csv", ["code"], [[str(i % 5)] for i in range(1200)])
    current = write_csv(
        tmp_path / "b.csv", ["code"], [[str(i % 5)] for i in range(1199)] + [["n/a"]]
    )
    assert rai("drift", "compare", str(reference), str(current), "--json") == 0
    code = json.loads(capsys.readouterr().out)["features"]["code"]
    assert code["ks_d"] is None
    assert code["chi2"] is not None


@pytest.mark.parametrize(
    ("reference", "current", "message"),
    [
        ("x,y\n1,2\n", "x,z\n1,2\n", r"different columns: only in .*a\.csv: \['y'\]"),
        ("x,y\n1,2\n", "x,y\n1,2,3\n", r"b\.csv, line 2: 3 fields, the header has 2"),
        ("", "x\n1\n", r"a\.csv: empty file"),
        ("x,x\n1,2\n", "x\n1\n", r"duplicate columns \['x'\]"),
        ("x,\n1,2\n", "x\n1\n", "blank column name"),
        ("x\n1\n", "x\n\n\n", "feature 'x' has no values in the current sample"),
        ("x\n1\ninf\n", "x\n1\n", "infinite values"),
    ],
)
def test_bad_input_is_one_line_error(
    tmp_path: Path, reference: str, current: str, message: str
) -> None:
    (tmp_path / "a.csv").write_text(reference, encoding="utf-8")
    (tmp_path / "b.csv").write_text(current, encoding="utf-8")
    with pytest.raises(CommandError, match=message) as caught:
        rai("drift", "compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"))
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 1


def test_unreadable_files_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n", encoding="utf-8")
    with pytest.raises(CommandError, match=r"cannot read .*missing\.csv"):
        rai("drift", "compare", str(tmp_path / "a.csv"), str(tmp_path / "missing.csv"))
    (tmp_path / "binary.csv").write_bytes(b"x\n\xff\xfe\x00\n")
    with pytest.raises(CommandError, match="not a readable UTF-8 CSV"):
        rai("drift", "compare", str(tmp_path / "a.csv"), str(tmp_path / "binary.csv"))


def test_bench_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert rai("bench", "drift", "--features", "3", "--rows", "20000", "--seed", "5", "--json") == 0
    figures = json.loads(capsys.readouterr().out)
    assert list(figures) == ["features", "rows", "ours_s", "scipy_ks_s"]
    assert (figures["features"], figures["rows"]) == (3, 20000)
    assert figures["ours_s"] > 0
    assert figures["scipy_ks_s"] > 0


def test_bench_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    # small samples take scipy's exact path on both sides
    assert rai("bench", "drift", "--features", "2", "--rows", "3000") == 0
    out = capsys.readouterr().out
    assert "2 features x 3000 reference x 3000 current rows" in out
    assert "ours (PSI, KL, KS per feature):" in out
    assert "scipy.stats.ks_2samp loop:" in out
    assert "KS equal to scipy's (max |dD| = 0, max |dp| = 0); 1 of 2 features drift" in out


def test_bench_refuses_nonsense_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        rai("bench", "drift", "--rows", "0")
    assert "must be at least 1" in capsys.readouterr().err
