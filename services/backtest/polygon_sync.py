"""Historical sync: Polygon (Massive) minute bars into the flat-file tree ``{dest}/{SYMBOL}/YYYY-MM-DD.csv``.

    python -m services.backtest.polygon_sync --symbols SPY QQQ SPX NDX --days 60 --dest data/flatfiles
    python -m services.backtest.polygon_sync --symbols SPY --start 2025-06-02 --end 2025-06-30 --sync-method s3

Days: ``--days N`` is the N trading sessions back from the last completed one (holidays skipped; an early
close's regular bars end at 13:00), or ``--start``/``--end`` dates. A session counts as completed once its
bars are final, 20:15 New York (post-market plus a delayed plan's 15 minutes; :mod:`services.backtest.flatfiles`).

Sources (``--sync-method``):

- ``rest`` (default): ``GET /v2/aggs/ticker/{T}/range/1/minute/{day}/{day}`` per symbol and day through
  :class:`~services.ingest.polygon_rest.PolygonRest` (``next_url`` paging, 429/5xx retried with backoff
  honouring ``Retry-After``), ``adjusted=true`` unless ``--unadjusted``. Indices are asked for as
  ``I:SPX``/``I:NDX``. Key: ``POLYGON_API_KEY``; host: ``POLYGON_BASE_URL`` (default: config/polygon.yaml).
- ``s3``: the bulk flat files, one gzip CSV per asset class and day (``us_stocks_sip/minute_aggs_v1/YYYY/MM/
  YYYY-MM-DD.csv.gz``, ``us_indices/minute_aggs_v1/...``; massive.com/docs/flat-files), streamed with boto3
  and split per symbol. ``POLYGON_S3_ACCESS_KEY`` and ``POLYGON_S3_SECRET_KEY`` (required),
  ``POLYGON_S3_ENDPOINT`` (default https://files.massive.com) and ``POLYGON_S3_BUCKET`` (default flatfiles).

The tree records its source and adjustment in ``{dest}/.polygon_sync.json``; a sync that would mix
adjusted and unadjusted bars (or REST and flat-file bars) in one tree is refused.

Resumable and idempotent: a day whose file exists is skipped, and a file only exists once it is complete
(:mod:`services.backtest.flatfiles`: write, fsync, rename). A sync killed at any point leaves no partial day
file; the rerun deletes its leftover temporary files and fetches the days still missing.

Progress: a bar on a terminal, one line per file otherwise (stderr); the summary goes to stdout. Exit
status 0 when every symbol-day was written or already there, 1 when some could not be fetched or had no
bars (rerun to retry them), 2 for bad arguments or configuration (one line, no traceback).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol

from services.backtest.flatfiles import (
    FLATFILE_COLUMNS,
    Row,
    SyncBusyError,
    SyncPlanError,
    day_path,
    day_rows,
    is_complete,
    plan_sessions,
    remove_stale_parts,
    row_from_bar,
    sync_lock,
    write_day,
)
from services.cliutil import OneLineParser, fail
from services.core.calendar import MarketCalendar, Session, default_calendar
from services.core.settings import ConfigError
from services.ingest.polygon_parsing import INDEX_SYMBOLS, our_symbol, polygon_ticker

PROG: Final = "python -m services.backtest.polygon_sync"
MANIFEST: Final = ".polygon_sync.json"
DEFAULT_S3_ENDPOINT: Final = "https://files.massive.com"
DEFAULT_S3_BUCKET: Final = "flatfiles"
#: Flat-file prefixes of minute aggregates per asset class (massive.com/docs/flat-files/*/minute-aggregates).
S3_PREFIXES: Final[Mapping[str, str]] = {
    "stocks": "us_stocks_sip/minute_aggs_v1",
    "indices": "us_indices/minute_aggs_v1",
}
SyncMethod = Literal["rest", "s3"]
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")


class SyncFetchError(RuntimeError):
    """A day could not be fetched for good (after the client's retries); the message is one line."""


# --- sources ---------------------------------------------------------------------------------------


class DaySource(Protocol):
    """Where one session's minute bars come from: rows per symbol, in the tree's columns."""

    description: str

    def fetch(self, symbols: Sequence[str], session: Session) -> Iterator[tuple[str, list[Row]]]:
        """``(symbol, rows)`` for each of ``symbols`` (rows may hold other days; the caller filters)."""
        ...

    def close(self) -> None: ...


class RestDaySource:
    """Custom bars over REST, one request (plus ``next_url`` pages) per symbol and day."""

    def __init__(self, *, adjusted: bool, base_url: str | None = None) -> None:
        from services.ingest.polygon_rest import PolygonRest
        from services.ingest.polygon_ws import load_polygon_config

        config = load_polygon_config().rest
        url = base_url or os.environ.get("POLYGON_BASE_URL", "").strip() or config.base_url
        self._client = PolygonRest(config.model_copy(update={"base_url": url}))
        self.adjusted = adjusted
        self.description = f"REST {url} (adjusted={str(adjusted).lower()})"

    def fetch(self, symbols: Sequence[str], session: Session) -> Iterator[tuple[str, list[Row]]]:
        from services.ingest.polygon_rest import PolygonAuthError, PolygonRestError

        for symbol in symbols:
            ticker = polygon_ticker(symbol)
            try:
                bars = self._client.aggregates(ticker, 1, "minute", session.date, session.date, adjusted=self.adjusted)
            except PolygonAuthError as exc:
                raise ConfigError(str(exc)) from None
            except PolygonRestError as exc:
                raise SyncFetchError(str(exc)) from None
            yield symbol, [row_from_bar(symbol, b) for b in bars]

    @property
    def requests(self) -> int:
        return self._client.requests

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Flat-file credentials and location, from ``POLYGON_S3_*``."""

    access_key: str
    secret_key: str
    endpoint: str
    bucket: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if env is None else env
        access, secret = env.get("POLYGON_S3_ACCESS_KEY", "").strip(), env.get("POLYGON_S3_SECRET_KEY", "").strip()
        missing = [n for n, v in (("POLYGON_S3_ACCESS_KEY", access), ("POLYGON_S3_SECRET_KEY", secret)) if not v]
        if missing:
            raise ConfigError(f"--sync-method s3 needs {' and '.join(missing)} (the flat-file S3 keys from the "
                              "Massive dashboard, not the API key)")
        endpoint = env.get("POLYGON_S3_ENDPOINT", "").strip() or DEFAULT_S3_ENDPOINT
        if not re.match(r"^https?://[^/\s]+", endpoint):
            raise ConfigError(f"POLYGON_S3_ENDPOINT={endpoint!r} is not an http(s) URL")
        bucket = env.get("POLYGON_S3_BUCKET", "").strip() or DEFAULT_S3_BUCKET
        return cls(access, secret, endpoint.rstrip("/"), bucket)

    def __repr__(self) -> str:
        return f"S3Settings(endpoint={self.endpoint!r}, bucket={self.bucket!r})"


def flatfile_key(asset_class: str, day: dt.date) -> str:
    """``us_stocks_sip/minute_aggs_v1/2025/07/2025-07-09.csv.gz`` (and ``us_indices/...``)."""
    return f"{S3_PREFIXES[asset_class]}/{day:%Y}/{day:%m}/{day.isoformat()}.csv.gz"


def asset_class(symbol: str) -> str:
    return "indices" if symbol in INDEX_SYMBOLS else "stocks"


def rows_from_flatfile(stream: IO[bytes], wanted: Mapping[str, str]) -> dict[str, list[Row]]:
    """Rows of the ``wanted`` tickers (Polygon ticker -> our symbol) from a gzip CSV flat file.

    Values are kept as published; index files have no ``volume``/``transactions`` (volume 0, blank).
    """
    out: dict[str, list[Row]] = {s: [] for s in wanted.values()}
    with gzip.GzipFile(fileobj=stream) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        reader = csv.DictReader(text)
        need = {"ticker", "open", "close", "high", "low", "window_start"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise SyncFetchError(f"flat file header {reader.fieldnames} lacks {sorted(need)}")
        for rec in reader:
            symbol = wanted.get(rec["ticker"])
            if symbol is None:
                continue
            out[symbol].append((
                symbol,
                rec.get("volume") or "0",
                rec["open"],
                rec["close"],
                rec["high"],
                rec["low"],
                rec["window_start"],
                rec.get("transactions") or "",
                "",
            ))
    return out


class S3DaySource:
    """The bulk flat files: one object per asset class and day, streamed and split per symbol."""

    def __init__(self, settings: S3Settings) -> None:
        import boto3
        from botocore.config import Config

        self.settings = settings
        self._s3: Any = boto3.client(
            "s3",
            endpoint_url=settings.endpoint,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            region_name="us-east-1",
            config=Config(signature_version="s3v4", retries={"max_attempts": 6, "mode": "adaptive"},
                          connect_timeout=10, read_timeout=60),
        )
        self.description = f"flat files s3://{settings.bucket} at {settings.endpoint}"
        self.requests = 0

    def fetch(self, symbols: Sequence[str], session: Session) -> Iterator[tuple[str, list[Row]]]:
        from botocore.exceptions import BotoCoreError, ClientError

        by_class: dict[str, dict[str, str]] = {}
        for s in symbols:
            by_class.setdefault(asset_class(s), {})[polygon_ticker(s)] = s
        for cls_name, wanted in by_class.items():
            key = flatfile_key(cls_name, session.date)
            self.requests += 1
            try:
                body = self._s3.get_object(Bucket=self.settings.bucket, Key=key)["Body"]
                try:
                    rows = rows_from_flatfile(body, wanted)
                finally:
                    body.close()
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket"):
                    raise ConfigError(f"flat files s3://{self.settings.bucket}: {code} (check POLYGON_S3_ACCESS_KEY, "
                                      "POLYGON_S3_SECRET_KEY, POLYGON_S3_BUCKET)") from None
                if code in ("NoSuchKey", "404", "AccessDenied", "403"):
                    # A day not published yet (about 11:00 ET the next day) or outside the plan: no file.
                    yield from ((s, []) for s in wanted.values())
                    continue
                raise SyncFetchError(f"flat file {key}: {code or exc}") from None
            except (BotoCoreError, OSError, EOFError, gzip.BadGzipFile) as exc:
                raise SyncFetchError(f"flat file {key}: {type(exc).__name__}: {exc}") from None
            yield from rows.items()

    def close(self) -> None:
        self._s3.close()


# --- the sync --------------------------------------------------------------------------------------


@dataclass(slots=True)
class SyncReport:
    """What a sync did."""

    sessions: list[Session]
    symbols: list[str]
    dest: Path
    written: list[Path] = field(default_factory=list)
    skipped: int = 0
    empty: list[tuple[str, dt.date]] = field(default_factory=list)
    bars: int = 0
    stale_parts_removed: int = 0
    requests: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def first(self) -> dt.date:
        return self.sessions[0].date

    @property
    def last(self) -> dt.date:
        return self.sessions[-1].date

    @property
    def ok(self) -> bool:
        return self.error is None and not self.empty

    def summary(self) -> str:
        line = (f"polygon_sync: {len(self.sessions)} sessions {self.first}..{self.last} x {len(self.symbols)} "
                f"symbols: {len(self.written)} files written ({self.bars} bars), {self.skipped} already complete, "
                f"{len(self.empty)} without bars, {self.requests} requests in {self.seconds:.1f}s -> {self.dest}")
        if self.empty:
            shown = ", ".join(f"{s} {d}" for s, d in self.empty[:5])
            line += f"; no bars for {shown}{' ...' if len(self.empty) > 5 else ''} (rerun to retry)"
        if self.error is not None:
            line += f"; stopped: {self.error} (rerun to resume)"
        return line


def check_manifest(dest: Path, method: SyncMethod, adjusted: bool | None) -> None:
    """Refuse to mix sources or adjustments in one tree; record them on first use."""
    path = dest / MANIFEST
    wanted = {"source": method, "adjusted": adjusted}
    if path.is_file():
        try:
            have = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable ({exc}); use another --dest") from None
        got = {"source": have.get("source"), "adjusted": have.get("adjusted")}
        if got != wanted:
            raise ConfigError(f"{dest} holds bars synced with {json.dumps(got)}, not {json.dumps(wanted)}; "
                              "use another --dest")
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(wanted, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _Progress:
    """A tqdm bar on a terminal, else one plain line per event."""

    def __init__(self, total: int, tty: bool) -> None:
        self._bar: Any = None
        if tty and total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="file", desc="polygon_sync", file=sys.stderr)

    def done(self, symbol: str, day: dt.date, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"{symbol} {day}", refresh=False)
            self._bar.update(1)
        else:
            sys.stderr.write(f"{symbol} {day}: {text}\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def sync(
    source: DaySource,
    symbols: Sequence[str],
    sessions: Sequence[Session],
    dest: Path,
    *,
    progress: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> SyncReport:
    """Fetch every missing ``(symbol, session)`` day file into ``dest`` (holding the tree's lock)."""
    started = clock()
    report = SyncReport(list(sessions), list(symbols), dest)
    with sync_lock(dest):
        report.stale_parts_removed = len(remove_stale_parts(dest))
        todo = [(s, [sym for sym in symbols if not is_complete(dest, sym, s.date)]) for s in sessions]
        report.skipped = len(sessions) * len(symbols) - sum(len(t) for _, t in todo)
        bar = _Progress(sum(len(t) for _, t in todo), progress)
        try:
            for session, missing in todo:
                if not missing:
                    continue
                for symbol, rows in source.fetch(missing, session):
                    day = day_rows(rows, session.date)
                    if not day:
                        report.empty.append((symbol, session.date))
                        bar.done(symbol, session.date, "no bars")
                        continue
                    path = day_path(dest, symbol, session.date)
                    write_day(path, day)
                    report.written.append(path)
                    report.bars += len(day)
                    bar.done(symbol, session.date, f"{len(day)} bars -> {path}")
        except SyncFetchError as exc:
            report.error = str(exc)
        finally:
            bar.close()
            report.requests = int(getattr(source, "requests", 0))
            report.seconds = clock() - started
    return report


# --- command line ----------------------------------------------------------------------------------


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date {text!r}: use YYYY-MM-DD") from None


def _symbol(text: str) -> str:
    sym = our_symbol(text.strip().upper())
    if not _SYMBOL.match(sym):
        raise argparse.ArgumentTypeError(f"invalid symbol {text!r}")
    return sym


def add_sync_args(p: argparse.ArgumentParser, *, dest_flag: str = "--dest") -> None:
    """--symbols, --days/--start/--end, the destination, --sync-method and --unadjusted."""
    p.add_argument("--symbols", nargs="+", required=True, type=_symbol, help="e.g. SPY QQQ SPX NDX (I:SPX also taken)")
    p.add_argument("--days", type=int, help="trading sessions back from the last completed one")
    p.add_argument("--start", type=_date, help="first session date YYYY-MM-DD (instead of --days)")
    p.add_argument("--end", type=_date, help="last session date YYYY-MM-DD (default: the last completed session)")
    p.add_argument(dest_flag, dest="dest", type=Path, default=Path("data/flatfiles"),
                   help="flat-file tree root (default data/flatfiles)")
    p.add_argument("--sync-method", choices=("rest", "s3"), default="rest",
                   help="rest: custom-bars API (default); s3: the bulk flat files")
    p.add_argument("--unadjusted", action="store_true", help="REST bars not adjusted for splits (default adjusted)")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    add_sync_args(p)
    return p


def plan_from_args(
    args: argparse.Namespace, cal: MarketCalendar | None = None, now_ns: int | None = None
) -> list[Session]:
    """The sessions an argument set names (SyncPlanError, one line, when it names none)."""
    if args.unadjusted and args.sync_method == "s3":
        raise SyncPlanError("--unadjusted applies to --sync-method rest only (flat files are as published)")
    if args.days is not None and args.start is not None:
        raise SyncPlanError("give --days or --start, not both")
    return plan_sessions(cal or default_calendar(), time.time_ns() if now_ns is None else now_ns,
                         days=args.days, start=args.start, end=args.end)


def open_source(method: SyncMethod, *, adjusted: bool) -> DaySource:
    """The configured source (ConfigError, one line, when its settings are missing or bad)."""
    if method == "s3":
        return S3DaySource(S3Settings.from_env())
    return RestDaySource(adjusted=adjusted)


def run(args: argparse.Namespace, prog: str = PROG) -> SyncReport:
    """Plan, check, sync; bad arguments or configuration exit 2 with one line, a busy tree exits 1."""
    symbols = list(dict.fromkeys(args.symbols))
    try:
        sessions = plan_from_args(args)
        dest: Path = args.dest
        if dest.exists() and not dest.is_dir():
            raise ConfigError(f"--dest {dest} exists and is not a folder")
        source = open_source(args.sync_method, adjusted=not args.unadjusted)
        try:
            dest.mkdir(parents=True, exist_ok=True)
            check_manifest(dest, args.sync_method, None if args.sync_method == "s3" else not args.unadjusted)
            sys.stderr.write(f"{prog}: {len(symbols)} symbols x {len(sessions)} sessions "
                             f"{sessions[0].date}..{sessions[-1].date} from {source.description} -> {dest}\n")
            return sync(source, symbols, sessions, dest, progress=sys.stderr.isatty())
        finally:
            source.close()
    except (SyncPlanError, ConfigError) as exc:
        fail(prog, str(exc))
    except SyncBusyError as exc:
        fail(prog, str(exc), code=1)
    except OSError as exc:
        fail(prog, f"{exc.filename or args.dest}: {exc.strerror or exc}", code=1)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = run(args)
    print(report.summary())
    return 0 if report.ok else 1


__all__ = ["FLATFILE_COLUMNS", "S3Settings", "SyncReport", "flatfile_key", "main", "rows_from_flatfile", "sync"]

if __name__ == "__main__":
    raise SystemExit(main())
