"""The README's settings table (## Configuration) lists every setting the Settings class reads
from the environment, and nothing else: a setting added without its row, or a row left behind by
a removed or renamed setting, fails here with its name."""

from __future__ import annotations

import re

from pydantic import AliasChoices

from classpulse.settings import REPO_ROOT, Settings

README = REPO_ROOT / "README.md"
TABLE_SECTION = "## Configuration"
ENV_NAME = re.compile(r"`(CLASSPULSE_[A-Z0-9_]+)`")


def settings_env_names() -> set[str]:
    """Every environment variable Settings reads: the prefix plus the field's name, or the
    field's own alias (pydantic-settings reads an alias as it is, without the prefix)."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(c.upper() for c in alias.choices if isinstance(c, str))
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def readme_table_names() -> set[str]:
    """The variables named in the first cell of each row of the README's settings table."""
    text = README.read_text(encoding="utf-8")
    start = text.index(TABLE_SECTION)
    end = text.find("\n## ", start + len(TABLE_SECTION))
    names: set[str] = set()
    for line in text[start : end if end != -1 else None].splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            names.update(ENV_NAME.findall(line.split("|")[1]))
    return names


def test_every_setting_has_a_readme_row() -> None:
    missing = sorted(settings_env_names() - readme_table_names())
    assert not missing, f"settings missing from the README's table ({TABLE_SECTION}): {missing}"


def test_every_readme_row_is_a_setting() -> None:
    table = readme_table_names()
    assert table, f"no settings table found under {TABLE_SECTION!r} in README.md"
    unknown = sorted(table - settings_env_names())
    assert not unknown, f"README rows naming no setting of classpulse/settings.py: {unknown}"
