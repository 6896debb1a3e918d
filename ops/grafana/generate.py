"""Write the dashboards' provisioning JSON: `python -m ops.grafana.generate` from the checkout's root.

The output (charts/dreambot/files/dashboards/<name>.json) is committed and shipped by the chart; a test
regenerates it and fails when the committed files differ, so edit the Python, never the JSON.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from ops.grafana import jobs, pipeline, trading

OUT_DIR = Path("charts/dreambot/files/dashboards")

#: File stem -> builder of each dashboard the chart ships.
DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "trading": trading.build,
    "pipeline": pipeline.build,
    "jobs": jobs.build,
}


def render(builder: dashboard.Dashboard) -> str:
    """The dashboard as Grafana's JSON model, panels numbered 1.. in order (stable, sorted keys)."""
    model = builder.build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return JSONEncoder(sort_keys=True, indent=2).encode(model) + "\n"


def write_all(out_dir: Path) -> list[Path]:
    """Render every dashboard into ``out_dir``; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in DASHBOARDS.items():
        path = out_dir / f"{name}.json"
        path.write_text(render(build()), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.grafana.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output folder (default: {OUT_DIR})")
    args = parser.parse_args(argv)
    try:
        written = write_all(args.out)
    except OSError as exc:
        print(f"cannot write dashboards to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
