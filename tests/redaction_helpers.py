"""Helpers shared by test modules, moved out of tests/test_redaction.py: no test module
imports another (tests/test_layering.py)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from classpulse import views
from records.reports import CSV_ATTENTION, CSV_HEAD


def _is_estimate(value: Any) -> bool:
    """A label, a confidence or a non-empty mapping of label to probability (not a container
    of other fields, which the walk looks into)."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, str | int | float):
        return value != ""
    if isinstance(value, dict):
        return bool(value) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
        )
    return False


def estimates_in(body: Any, about_student: bool = False) -> list[str]:
    """Where a JSON answer or message shows a student's emotion estimate: an estimate field
    (``views.ESTIMATE_FIELDS``) holding a value in an object about one student (it has a
    ``student_id``) or inside one; with ``about_student`` (a route about one student: the
    caller's own, or one named in its path) anywhere in it."""
    found: list[str] = []

    def walk(x: Any, where: str, student: bool) -> None:
        if isinstance(x, dict):
            student = student or bool(x.get("student_id"))
            for k, v in x.items():
                if student and k in views.ESTIMATE_FIELDS and _is_estimate(v):
                    found.append(f"{where}.{k}={json.dumps(v)[:60]}")
                else:
                    walk(v, f"{where}.{k}", student)
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]", student)

    walk(body, "$", about_student)
    return found


def csv_estimates_in(text: str) -> list[str]:
    """Rows of a CSV report about one student that carry a probability or a dominant label."""
    plain = {"session_id", "session_title", *CSV_HEAD, "suppressed", *CSV_ATTENTION}
    return [
        f"row {i}: {row}"
        for i, row in enumerate(csv.DictReader(io.StringIO(text)))
        if row.get("student_id") and any(v for k, v in row.items() if k not in plain)
    ]
