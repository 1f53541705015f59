"""The one progress bar: tqdm on stderr, shown where someone is watching (a terminal) and quiet in
logs and tests, unless `show` says otherwise."""

from __future__ import annotations

from typing import Iterable


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
             show: bool | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                disable=None if show is None else not show)
