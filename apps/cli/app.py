"""`harness app`: serve the Streamlit dashboard (apps/dashboard/app.py).

    harness app                      # http://127.0.0.1:8501, runs from $INTERP_HARNESS_RUNS or ./runs
    harness app --runs DIR --port 8600
    harness app --host 0.0.0.0       # reachable from other machines: only on a trusted network

The server listens on 127.0.0.1 unless --host says otherwise, runs offline (no model or dataset
hub, unless the environment already says otherwise), loads only models that the zoo or the runs
name (--any-model lifts that), and stops with its Streamlit child on SIGTERM as on Ctrl+C.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

from apps.cli.options import add_runs, port

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
ROOT = APP.parents[2]


def register(subparsers) -> None:
    p = subparsers.add_parser("app", help="serve the dashboard (Streamlit) on 127.0.0.1",
                              description="Serve the Streamlit dashboard to explore runs, activations, "
                              "features, circuits and model comparisons.")
    add_runs(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=port, default=8501, help="port (default: 8501)")
    p.add_argument("--any-model", action="store_true",
                   help="let pages load any model folder or id typed or put in a URL (default: the zoo and the "
                        "models runs were made from); only for a dashboard no one else can reach")
    p.set_defaults(func=cmd_app)


def streamlit_command(host: str, port: int, python: str = sys.executable) -> list[str]:
    return [python, "-m", "streamlit", "run", str(APP), "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]


def app_env(runs: str | None, base: dict | None = None, any_model: bool = False) -> dict:
    """The server's environment: the runs folder, offline hubs, whether any model may load, and the
    source tree importable by the pages."""
    env = {**OFFLINE, **dict(os.environ if base is None else base)}
    env.pop("INTERP_HARNESS_APP_ANY_MODEL", None)
    if any_model:
        env["INTERP_HARNESS_APP_ANY_MODEL"] = "1"
    if runs:
        env["INTERP_HARNESS_RUNS"] = str(Path(runs).expanduser().resolve())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def check_port_free(host: str, number: int) -> None:
    from harness.errors import HarnessError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, number))
        except OSError as e:
            raise HarnessError(f"cannot listen on {host}:{number}: {e.strerror or e}; pick another --port "
                               "(or stop what is using it)") from None


def cmd_app(args) -> int:
    import subprocess

    from harness.errors import HarnessError

    if args.runs and not Path(args.runs).expanduser().is_dir():
        raise HarnessError(f"--runs {args.runs}: no such folder; make runs first (e.g. `harness demo --runs {args.runs}`)")
    check_port_free(args.host, args.port)
    print(f"serving the dashboard on http://{args.host}:{args.port} (Ctrl+C stops it)", file=sys.stderr)
    child = subprocess.Popen(streamlit_command(args.host, args.port), env=app_env(args.runs, any_model=args.any_model))

    def stop(signum, frame):  # SIGTERM from a supervisor: take the server down with us
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return child.wait()
    except KeyboardInterrupt:
        _stop_child(child)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_child(child, grace: float = 10.0) -> None:
    import subprocess

    if child.poll() is None:
        child.terminate()
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
