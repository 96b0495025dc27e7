"""Every setting is documented in the README and offered by the CLI, from one list."""

from __future__ import annotations

from pathlib import Path

import click
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
    if setting.option:
        assert f"`{setting.option}`" in rows[0]


def _all_params() -> list[click.Parameter]:
    out: list[click.Parameter] = []

    def walk(cmd: click.Command) -> None:
        out.extend(cmd.params)
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(get_command(app))
    return out


@pytest.mark.parametrize("setting", [s for s in config.SETTINGS if s.option], ids=lambda s: s.name)
def test_every_setting_is_an_option_with_its_help_and_environment_variable(
    setting: config.Setting,
) -> None:
    assert setting.option is not None
    flag = setting.option.split("/")[0]
    matching = [p for p in _all_params() if flag in getattr(p, "opts", [])]
    assert matching, f"no command offers {flag}"
    assert all(getattr(p, "envvar", None) == setting.env for p in matching)
    assert any(getattr(p, "help", None) == setting.help for p in matching)


def test_a_counting_setting_that_is_no_number_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ASKFIRST_MAX_BODY_BYTES=abc used to end `askfirst serve` with a ValueError traceback."""
    from typer.testing import CliRunner

    from askfirst.cli import app

    monkeypatch.setenv("ASKFIRST_MAX_BODY_BYTES", "lots")
    db = f"sqlite:///{tmp_path / 'a.db'}"
    assert CliRunner().invoke(app, ["init", "--db", db]).exit_code == 0
    result = CliRunner().invoke(app, ["serve", "--db", db, "--port", "1"])
    assert result.exit_code != 0
    assert result.output.strip() == (
        "error: ASKFIRST_MAX_BODY_BYTES='lots': give a whole number of at least 1"
    )
