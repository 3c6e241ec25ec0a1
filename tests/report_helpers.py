"""Helpers shared by test modules, moved out of tests/test_reports.py: no test module
imports another (tests/test_layering.py)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pypdfium2 as pdfium

from classpulse.cli import main as cli_main
from tests.gateway_helpers import bearer, client_for


def csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def teacher_report(settings, teacher: int, session_id: str, fmt: str | None = None):
    """The session's report as its teacher downloads it (``fmt``: csv, json or pdf; the API's
    default without one): the response."""
    params = {} if fmt is None else {"format": fmt}
    with client_for(settings) as client:
        return client.get(
            f"/api/sessions/{session_id}/report", params=params, headers=bearer(settings, teacher)
        )


def render_pages(pdf_bytes):
    pdf = pdfium.PdfDocument(pdf_bytes)
    try:
        return len(pdf), np.asarray(pdf[0].render(scale=1).to_pil().convert("L"))
    finally:
        pdf.close()


def cli_export(to: str, *args: str) -> int:
    """`classpulse export --from 2026-03-01 --to TO ARGS...`; returns its exit status."""
    return cli_main(["export", "--from", "2026-03-01", "--to", to, *args])
