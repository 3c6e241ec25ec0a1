"""Rules for text people type: plain one-line text for titles and names (``PlainText``), and
what a student may call themselves (``clean_display_name``).

A student's display name: readable text that shows as what it is on the dashboard.

A display name reaches the teacher's tiles, reports and CSV exports. Refused: control and
format characters (bidi overrides that reverse how a name reads, zero-width characters that make
two names look alike), characters that render blank (Hangul fillers, the braille blank) used as
padding, piles of combining marks, and names with nothing visible in them.
"""

from __future__ import annotations

import unicodedata

from pydantic import AfterValidator

MAX_LENGTH = 80
MAX_MARKS_PER_CHAR = 3  # enough for Vietnamese and Indic vowel signs, not for "Zalgo" text
# Letters and symbols that render as nothing.
BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5\u034f\u180e")
# Joiners are format characters that real names need (Persian ZWNJ, emoji ZWJ sequences) —
# only between two visible characters.
JOINERS = frozenset("\u200c\u200d")


class DisplayNameError(ValueError):
    """Why a display name is refused, in words a student understands."""


def clean_display_name(raw: str) -> str:
    """The name as stored (NFC, runs of whitespace folded to one space), or DisplayNameError."""
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    if not 1 <= len(name) <= MAX_LENGTH:
        raise DisplayNameError(f"display_name must have 1 to {MAX_LENGTH} characters")
    marks = 0
    for i, ch in enumerate(name):
        category = unicodedata.category(ch)
        if ch in JOINERS:
            inside = 0 < i < len(name) - 1 and not name[i - 1].isspace()
            if not (inside and not name[i + 1].isspace()):
                raise DisplayNameError("display_name has an invisible joiner at a word edge")
            continue
        if category[0] == "C":  # Cc control, Cf format (bidi, zero-width), Co, Cs, Cn
            raise DisplayNameError(
                f"display_name contains an invisible or control character (U+{ord(ch):04X})"
            )
        if ch in BLANK_LOOKING:
            raise DisplayNameError(
                f"display_name contains a blank-looking character (U+{ord(ch):04X})"
            )
        marks = marks + 1 if category[0] == "M" else 0
        if marks > MAX_MARKS_PER_CHAR:
            raise DisplayNameError("display_name stacks too many accents on one character")
    if not any(unicodedata.category(ch)[0] in "LNS" for ch in name):
        raise DisplayNameError("display_name needs at least one letter, digit or symbol")
    return name


def no_control_characters(value: str) -> str:
    """Refuse text with a control character: U+0000 is one, and PostgreSQL cannot store it in a
    text column (the insert failed with a 500); the others have no place in a one-line name."""
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise ValueError(f"contains a control character (U+{ord(ch):04X})")
    return value


def optional_display_name(value: str) -> str:
    """A teacher's display name (students read it as "Teacher: ..."): the students' rule, or
    empty (the email's first part is shown then)."""
    return clean_display_name(value) if value.strip() else ""


# For request fields stored as text: a 422 naming the field instead of a database error.
PlainText = AfterValidator(no_control_characters)
# A teacher's display name, held to the rule of the names students type (a 422 says why).
TeacherName = AfterValidator(optional_display_name)
