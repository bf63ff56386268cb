"""Every setting is documented once: Settings fields == .env.example == the README's configuration table."""

from __future__ import annotations

import re

from ktoforge.settings import Settings
from tests.conftest import ROOT


def env_names(text: str) -> set[str]:
    return set(re.findall(r"^(KTOFORGE_[A-Z0-9_]+)=", text, flags=re.M))


def test_env_example_lists_every_setting():
    fields = {f"KTOFORGE_{name.upper()}" for name in Settings.model_fields}
    assert env_names((ROOT / ".env.example").read_text()) == fields


def test_readme_table_matches_env_example():
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `(KTOFORGE_[A-Z0-9_]+)` \|", readme, flags=re.M))
    assert table == env_names((ROOT / ".env.example").read_text())
