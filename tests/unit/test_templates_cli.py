"""`comfyfleet templates new` from a saved graph: the keep/drop questions on a terminal, all
kept with --yes or without a terminal, and a file that loads either way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from comfyfleet.cli import _templates, app
from comfyfleet.templates import TemplateLibrary, load_template


def _graph(tmp_path: Path) -> Path:
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(dict(TemplateLibrary().get("txt2img").workflow)))
    return path


def test_on_a_terminal_each_proposal_is_kept_or_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_templates, "_interactive", lambda: True)
    ws = tmp_path / "ws"
    answers = "y\nn\n" + "y\n" * 9  # keep the prompt, drop the negative, keep the rest
    result = CliRunner().invoke(
        app,
        ["templates", "new", "fox", "--from", str(_graph(tmp_path)), "-w", str(ws)],
        input=answers,
    )
    assert result.exit_code == 0, result.output
    assert "keep prompt: text = " in result.output
    template = load_template(ws / "templates" / "fox.yaml")
    assert "negative" not in template.parameters
    assert list(template.parameters)[:3] == ["prompt", "seed", "steps"]


def test_yes_keeps_every_proposal_and_an_existing_file_is_kept(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    args = ["templates", "new", "fox", "--from", str(_graph(tmp_path)), "-w", str(ws), "--yes"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    written = yaml.safe_load((ws / "templates" / "fox.yaml").read_text())
    assert list(written["parameters"])[:2] == ["prompt", "negative"]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1
    assert isinstance(again.exception, Exception) and "exists" in str(again.exception)


def test_a_skeleton_is_a_working_template_under_the_new_name(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    result = CliRunner().invoke(app, ["templates", "new", "mine", "-w", str(ws), "-d", "my own"])
    assert result.exit_code == 0, result.output
    template = load_template(ws / "templates" / "mine.yaml")
    assert (template.name, template.description) == ("mine", "my own")
    assert "prompt" in template.parameters
