"""Every setting is documented in the README and offered by the CLI, from one list."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.main import get_command

from askfirst import config
from askfirst.cli import app

README = (Path(__file__).parent.parent / "README.md").read_text("utf-8")


@pytest.mark.parametrize("setting", config.SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_in_the_readme_settings_table(setting: config.Setting) -> None:
    rows = [line for line in README.splitlines() if line.startswith(f"| {setting.name} |")]
    assert rows, f"README's settings table has no row for {setting.name}"
    assert f"`{setting.env}`" in rows[0]
    assert f"`{setting.option}`" in rows[0]


@pytest.mark.parametrize("setting", config.SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_an_option_of_the_commands_that_read_it(
    setting: config.Setting,
) -> None:
    root = get_command(app)
    decide = root.commands["decide"]  # type: ignore[attr-defined]
    options = {opt: p for p in decide.params for opt in getattr(p, "opts", [])}
    assert setting.option in options
    assert options[setting.option].envvar == setting.env
    assert options[setting.option].help == setting.help
