"""The `harness` command line: one module per command group in this package, named as the command
(`harness sae ...` is apps/cli/sae.py; `demo` is the main job, `look` its last stage on its own);
options every command shares are declared once, in options.py.

Adding a subcommand: write a module with `register(subparsers)` that adds its parser and sets
`func=<function(args) -> int>`, then add the module's name to COMMAND_MODULES. Modules are
imported to build the parser, so they must import only light things at the top (torch,
transformers, the harness models go inside the command function): `harness --help` stays fast.

One error boundary (`main`): bad input never shows a traceback. The harness's own errors
(HarnessError) and the operating system's (a missing file, a folder without write permission,
a full disk) become one line `harness: error: <message>` on stderr and exit status 2. Anything
else is a bug: its traceback goes to a log file under the harness cache and the one line names
that file (exit status 1).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import traceback

# One line per subcommand module (see the module docstring).
COMMAND_MODULES = [
    "apps.cli.models",
    "apps.cli.runs",
    "apps.cli.demo",
    "apps.cli.look",
    "apps.cli.cache",
    "apps.cli.organism",
    "apps.cli.recipe",
    "apps.cli.eval",
    "apps.cli.probe",
    "apps.cli.steer",
    "apps.cli.diff",
    "apps.cli.crosscoder",
    "apps.cli.circuits",
    "apps.cli.sae",
    "apps.cli.app",
]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are the same one line as every other error."""

    def error(self, message: str):
        fail(f"{message} (see `{self.prog} --help`)")


def fail(message: str, status: int = 2):
    # A multi-line message would break the one-line contract; keep its first line.
    line = str(message).strip().splitlines()[0] if str(message).strip() else "unknown error"
    print(f"harness: error: {line}", file=sys.stderr)
    sys.exit(status)


# -- entry point -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from harness.runs import versions

    parser = _Parser(prog="harness", description="Interpretability and evaluation harness for language models.")
    parser.add_argument("--version", action="version", version=f"harness {versions()['harness'] or 'unknown'}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        fail("interrupted", status=130)
    except BrokenPipeError:  # `harness runs | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except Exception as e:  # noqa: BLE001 - the one boundary: every error ends as one line
        message = user_error(e)
        if message is not None:
            fail(message)
        fail(f"internal error: {type(e).__name__}: {_first_line(e)} (traceback in {_log_traceback(e)}; "
             "please report it)", status=1)


def user_error(e: BaseException) -> str | None:
    """The one line for an error caused by input or environment, or None for a bug."""
    from harness.errors import HarnessError  # after parsing, so `--help` imports nothing of the harness

    if isinstance(e, HarnessError):
        return str(e)
    if isinstance(e, OSError) and (e.filename or e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT)):
        where = f" {e.filename}" if e.filename else ""
        if isinstance(e, FileNotFoundError):
            return f"no such file or folder:{where}"
        if isinstance(e, PermissionError) or e.errno == errno.EROFS:
            return f"permission denied:{where} ({e.strerror}); make it writable or choose another folder"
        return f"{e.strerror or type(e).__name__}:{where}"
    if isinstance(e, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8"
    if isinstance(e, MemoryError):
        return "out of memory; try a smaller --batch-size or fewer tokens"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def _log_traceback(e: BaseException) -> str:
    """Write the traceback to a log file; its path, or 'stderr' if no file could be written."""
    from datetime import datetime

    from harness.paths import logs_dir

    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        folder = logs_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"harness-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
        path.write_text(f"harness {' '.join(sys.argv[1:])}\n\n{text}", encoding="utf-8")
        return str(path)
    except OSError:
        print(text, file=sys.stderr)
        return "stderr above"

if __name__ == "__main__":
    sys.exit(main())
