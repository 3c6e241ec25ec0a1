"""CSV cells that a spreadsheet will not run as formulas (CSV injection).

A text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a
formula by Excel, LibreOffice and Sheets, so user text (a display name, a session title) could
run one in an admin's spreadsheet. Such cells get a leading single quote (the OWASP rule).
Real numbers are written as they are: ``-3`` the int stays ``-3``; ``"-3"`` the text does not.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str:
    """``value`` as a CSV cell: None is empty, numbers as they are, text escaped if needed."""
    if value is None:
        return ""
    if isinstance(value, numbers.Number):
        return str(value)
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def safe_row(values: Iterable[Any]) -> list[str]:
    """Every cell of a row through ``safe_cell``."""
    return [safe_cell(v) for v in values]
