"""The PDF form of a session report: summary and charts on page one, alerts after.

Titles, names, e-mails and alert messages are user text: every text is drawn with
``parse_math=False``, so a ``$`` in it is not mathtext (``$\\foo$`` would fail the PDF).

Rendered with matplotlib's object API (``Figure`` + ``PdfPages``), never pyplot, so no GUI
backend is loaded and no global figure state is shared. The gateway calls ``render`` from its
thread pool: a PDF costs a few hundred milliseconds of CPU.
"""

from __future__ import annotations

import io
import textwrap
import threading
from datetime import datetime

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.dates import AutoDateLocator, DateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from records.reports import Report

COLORS = {
    "angry": "#c62828",
    "disgust": "#6d4c41",
    "fear": "#7b1fa2",
    "happy": "#2e7d32",
    "sad": "#1565c0",
    "surprise": "#ef6c00",
    "neutral": "#757575",
}
A4 = (8.27, 11.69)
ALERTS_PER_PAGE = 28
# matplotlib's font cache and text layout are not safe across threads; the gateway renders in
# its thread pool, so one PDF at a time.
_LOCK = threading.Lock()


def _fmt_duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def _summary_lines(report: Report) -> list[str]:
    s, sm = report.session, report.summary
    mode = report.policy.emotion_mode
    lines = [
        f"Started {s.created_at:%Y-%m-%d %H:%M} UTC"
        + (f", ended {s.ended_at:%H:%M} UTC" if s.ended_at else " (still running)")
        + f"  ·  duration {_fmt_duration(sm['duration_s'])}",
        f"Teacher: {report.owner_email}  ·  policy: {mode}"
        + (f" (min. group {report.policy.min_group_size})" if mode == "aggregate_only" else ""),
        f"Students joined: {sm['students_joined']}  ·  seen on camera: {sm['students_seen']}  ·  "
        f"peak present: {sm['peak_present']}  ·  mean present: {sm['mean_present']}",
        f"Frames analysed: {sm['frames']}  ·  with a face: {sm['frames_with_face']}  ·  "
        f"alerts: {sm['alerts']}",
    ]
    shares = sm.get("emotion_shares")
    if shares:
        mix = ", ".join(f"{k} {v:.0%}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
        lines.append(f"Class expression mix: {mix}")
    elif mode == "off":
        lines.append("Emotion inference is off under the organisation's policy: presence only.")
    if sm.get("suppressed_buckets"):
        lines.append(
            f"{sm['suppressed_buckets']} time buckets had fewer than "
            f"{report.policy.min_group_size} students present; their emotions are not shown."
        )
    if report.policy.attention:
        share = sm.get("facing_share")
        lines.append(
            "Facing the screen (head orientation, not a judgement of attention): "
            + (f"{share:.0%} of the class's observed frames." if share is not None else "no data.")
        )
    lines.append("Expressions are estimates from faces, not judgements about a person.")
    return lines


def _facing_page(report: Report) -> Figure | None:
    """Per student, the share of their observed frames facing the screen (attention on, with
    students' rows shown); None otherwise."""
    totals: dict[str, list[int]] = {}
    names: dict[str, str] = {}
    for r in report.student_rows:
        if r.student_id is None or r.attention_frames is None:
            continue
        acc = totals.setdefault(r.student_id, [0, 0])
        acc[0] += r.attention_frames
        acc[1] += r.facing_frames or 0
        names[r.student_id] = r.display_name or r.student_id[:8]
    if not report.policy.attention or not totals:
        return None
    fig = Figure(figsize=A4)
    fig.text(0.07, 0.955, "Facing the screen", fontsize=15, weight="bold", parse_math=False)
    fig.text(
        0.07,
        0.935,
        "Share of each student's observed frames with the head facing the screen: an "
        "observation of head orientation, not of attention, interest or effort.",
        fontsize=8.5,
        color="#555",
        parse_math=False,
    )
    y = 0.9
    for sid, (observed, facing) in sorted(totals.items(), key=lambda kv: names[kv[0]].lower()):
        share = f"{facing / observed:.0%}" if observed else "no data"
        fig.text(0.07, y, names[sid], fontsize=9, parse_math=False)
        fig.text(0.6, y, f"{share} of {observed} frames", fontsize=9, parse_math=False)
        y -= 0.018
        if y < 0.05:  # one page: a class's roster fits; the CSV has every row
            fig.text(0.07, y, "… (see the CSV export for all)", fontsize=8.5, parse_math=False)
            break
    return fig


def _first_page(report: Report) -> Figure:
    fig = Figure(figsize=A4)
    fig.text(0.07, 0.955, report.session.title, fontsize=17, weight="bold", parse_math=False)
    fig.text(0.07, 0.935, "ClassPulse session report", fontsize=10, color="#555", parse_math=False)
    y = 0.905
    for line in _summary_lines(report):
        for part in textwrap.wrap(line, 100):
            fig.text(0.07, y, part, fontsize=8.5, parse_math=False)
            y -= 0.018
    rows = report.class_rows
    times: list[datetime] = [r.bucket_start for r in rows]
    mix = fig.add_axes((0.1, 0.42, 0.72, 0.28))
    mix.set_title(
        "Class expression mix over time (mean probability)", fontsize=10, parse_math=False
    )
    shown = [r for r in rows if r.probs is not None]
    if shown:
        xs = date2num([r.bucket_start for r in shown])
        ys = [[(r.probs or {}).get(k, 0.0) for r in shown] for k in report.labels]
        mix.stackplot(
            xs, ys, labels=report.labels, colors=[COLORS.get(k, "#00838f") for k in report.labels]
        )
        mix.set_ylim(0, 1)
        legend = mix.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
        for label in legend.get_texts():  # the labels come from stored data
            label.set_parse_math(False)
    else:
        mix.text(
            0.5,
            0.5,
            "no emotion data shown under the policy",
            ha="center",
            va="center",
            transform=mix.transAxes,
            color="#777",
            parse_math=False,
        )
    mix.tick_params(labelsize=7)
    pres = fig.add_axes((0.1, 0.07, 0.72, 0.26))
    pres.set_title("Students present (with a face) per time bucket", fontsize=10, parse_math=False)
    if rows:
        width = report.bucket_seconds / 86400 * 0.9  # bar width in days (matplotlib date units)
        pres.bar(date2num(times), [r.students_present for r in rows], width=width, color="#1565c0")
    pres.yaxis.set_major_locator(MaxNLocator(integer=True))
    pres.tick_params(labelsize=7)
    for ax in (mix, pres):
        ax.xaxis.set_major_locator(AutoDateLocator())
        ax.xaxis.set_major_formatter(DateFormatter("%H:%M"))  # UTC, as the summary says
        for label in ax.get_xticklabels():
            label.set_rotation(30)
    return fig


def _alert_pages(report: Report) -> list[Figure]:
    alerts = report.alerts
    chunks = [alerts[i : i + ALERTS_PER_PAGE] for i in range(0, len(alerts), ALERTS_PER_PAGE)]
    figures = []
    for n, chunk in enumerate(chunks or [[]]):
        fig = Figure(figsize=A4)
        fig.text(
            0.07,
            0.955,
            "Alerts" + (f" ({n + 1}/{len(chunks)})" if len(chunks) > 1 else ""),
            fontsize=15,
            weight="bold",
            parse_math=False,
        )
        fig.text(
            0.07,
            0.935,
            "Prompts to look, raised by the session's rules; not judgements.",
            fontsize=9,
            color="#555",
            parse_math=False,
        )
        y = 0.9
        if not chunk:
            fig.text(
                0.07, y, "No alerts were raised in this session.", fontsize=10, parse_math=False
            )
        for a in chunk:
            start = a["started_at"][11:19]
            end = a["ended_at"][11:19] if a["ended_at"] else "open"
            fig.text(
                0.07,
                y,
                f"{start}–{end}  [{a['rule']}]",
                fontsize=8.5,
                weight="bold",
                parse_math=False,
            )
            for part in textwrap.wrap(a["message"], 95)[:2]:
                y -= 0.014
                fig.text(0.09, y, part, fontsize=8.5, parse_math=False)
            y -= 0.02
        figures.append(fig)
    return figures


def render(reports: list[Report]) -> bytes:
    """A PDF of one or more session reports (page one: summary and charts; then alerts)."""
    buf = io.BytesIO()
    with (
        _LOCK,
        PdfPages(buf, metadata={"Title": "ClassPulse report", "Creator": "ClassPulse"}) as pdf,
    ):
        for report in reports:
            facing = _facing_page(report)
            pages = [_first_page(report), *([facing] if facing else []), *_alert_pages(report)]
            for fig in pages:
                pdf.savefig(fig)
    return buf.getvalue()
