"""The `harness` CLI run in-process by the end-to-end tests, and the one-line errors it gives."""

from __future__ import annotations


def run_cli(runs, *argv) -> int:
    """`harness ARGV --runs RUNS` in this process; its exit status."""
    from apps.cli import main

    try:
        return main([*argv, "--runs", str(runs)])
    except SystemExit as e:  # the CLI's error boundary exits with status 2 after one line
        return e.code


def one_line_error(capsys, code: int) -> str:
    """The error the last command printed, checked to be one line (no traceback) with status 2."""
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err
