"""`harness app`: serve the Streamlit dashboard (apps/dashboard/app.py).

    harness app                      # http://127.0.0.1:8501, runs from $INTERP_HARNESS_RUNS or ./runs
    harness app --runs DIR --port 8600
    harness app --host 0.0.0.0       # reachable from other machines: only on a trusted network

The server listens on 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "dashboard" / "app.py"
ROOT = APP.parents[2]


def register(subparsers) -> None:
    p = subparsers.add_parser("app", help="serve the dashboard (Streamlit) on 127.0.0.1",
                              description="Serve the Streamlit dashboard to explore runs, activations, "
                              "features, circuits and model comparisons.")
    p.add_argument("--runs", metavar="DIR", help="runs folder (default: $INTERP_HARNESS_RUNS or ./runs)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8501, help="port (default: 8501)")
    p.set_defaults(func=cmd_app)


def streamlit_command(host: str, port: int, python: str = sys.executable) -> list[str]:
    return [python, "-m", "streamlit", "run", str(APP), "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]


def app_env(runs: str | None, base: dict | None = None) -> dict:
    """The server's environment: the runs folder, and the source tree importable by the pages."""
    env = dict(os.environ if base is None else base)
    if runs:
        env["INTERP_HARNESS_RUNS"] = str(Path(runs).expanduser().resolve())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def cmd_app(args) -> int:
    import subprocess

    from harness.errors import HarnessError

    if not 0 < args.port < 65536:
        raise HarnessError(f"--port must be between 1 and 65535, got {args.port}")
    if args.runs and not Path(args.runs).expanduser().is_dir():
        raise HarnessError(f"--runs {args.runs}: no such folder; make runs first (e.g. `harness demo --runs {args.runs}`)")
    print(f"serving the dashboard on http://{args.host}:{args.port} (Ctrl+C stops it)", file=sys.stderr)
    try:
        return subprocess.call(streamlit_command(args.host, args.port), env=app_env(args.runs))
    except KeyboardInterrupt:
        return 0
