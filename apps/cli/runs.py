"""`harness runs`: the runs in the runs folder, with their status (corrupt and stale ones marked)."""

from __future__ import annotations

from apps.cli.options import add_runs


def register(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list the runs", description="List the runs in the runs folder.")
    add_runs(p)
    p.set_defaults(func=cmd_runs)


def cmd_runs(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.runs import RunStore

    store = RunStore(args.runs)
    infos = store.list()
    console = Console()
    if not infos:
        console.print(f"no runs in {store.root}")
        return 0
    table = Table(title=f"runs in {store.root}")
    for col in ("name", "kind", "created", "status", "models", "note"):
        table.add_column(col, overflow="fold", no_wrap=col == "name")
    for i in infos:
        note = i.error or i.failure or ""
        status = f"[red]{i.status or 'unreadable'}[/]" if (i.error or i.status == "failed") else (i.status or "")
        created = (i.created or "")[:19].replace("T", " ")  # ISO UTC, shown to the second
        table.add_row(i.name, i.kind or "", created, status, ", ".join(i.models), note)
    console.print(table)
    return 0
