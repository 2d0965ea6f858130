"""Progress bars for long work (tqdm), written to stderr so `--json` output on stdout stays clean."""
from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """Bars are shown on an interactive stderr unless CERTIFY_NO_PROGRESS is set."""
    return sys.stderr.isatty() and not os.environ.get("CERTIFY_NO_PROGRESS")


def progress_bar(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not progress_enabled(), file=sys.stderr)
