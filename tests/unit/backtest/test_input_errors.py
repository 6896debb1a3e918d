"""Bad inputs to the backtest CLI end in one line and exit 2 (or a report), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.backtest.main import main


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse and parser.exit
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_csv_gz_that_is_not_gzip_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spy.csv.gz"
    path.write_text("Datetime,Open,High,Low,Close,Volume\n", encoding="utf-8")
    code, _out, err = _run(["--symbol", "SPY", "--data", str(path), "--output", str(tmp_path / "o")], capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert f"{path}: not a readable compressed CSV (Not a gzipped file" in err


def test_a_file_of_bars_from_the_future_is_reported_not_a_crash(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spy.csv"
    path.write_text("Datetime,Open,High,Low,Close,Volume\n2099-07-09 09:30:00-04:00,620,621,619,620,10\n"
                    "2099-07-09 09:31:00-04:00,620,621,619,620,10\n", encoding="utf-8")
    code, out, err = _run(["--symbol", "SPY", "--data", str(path), "--output", str(tmp_path / "o")], capsys)
    assert "Traceback" not in err and code == 0
    assert f"{path}: 0 accepted, 2 rejected (future 2)" in out
