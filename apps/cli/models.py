"""`harness models`: the model zoo, with what is installed and converted."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list the model zoo", description="List the model zoo.")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness import zoo

    table = Table(title="model zoo")
    for col in ("name", "family", "description", "package", "installed", "converted"):
        table.add_column(col, overflow="fold", no_wrap=col == "name")
    for m in zoo.list_models():
        row = [_field(m, k) for k in ("name", "family", "description", "package", "installed", "converted")]
        table.add_row(*[_cell(v) for v in row])
    Console().print(table)
    return 0


def _field(entry, key: str):
    return entry.get(key) if isinstance(entry, dict) else getattr(entry, key, None)


def _cell(value) -> str:
    if value is True:
        return "[green]yes[/]"
    if value is False:
        return "no"
    return "" if value is None else str(value)
