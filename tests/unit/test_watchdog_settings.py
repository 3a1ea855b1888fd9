"""The `watchdog` settings and the warm-ups they name: errors say which setting is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyfleet.config import load_settings
from comfyfleet.errors import ConfigError
from comfyfleet.templates import TemplateLibrary
from comfyfleet.watchdog import WarmupSettings, WatchdogSettings, build_warmup

ECHO = {"1": {"class_type": "FleetEcho", "inputs": {"text": "warm", "seed": 0}}}


@pytest.fixture
def library(tmp_path: Path) -> TemplateLibrary:
    return TemplateLibrary.for_workspace(tmp_path)


def test_defaults_watch_for_stalls_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    watchdog = load_settings().watchdog
    assert (watchdog.stall_s, watchdog.interrupt_grace_s) == (300.0, 30.0)
    assert not watchdog.watches_idle and watchdog.warmup is None


def test_the_section_loads_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMFYFLEET_WATCHDOG__RSS_MB", "8000")
    monkeypatch.setenv("COMFYFLEET_WATCHDOG__WARMUP__TEMPLATE", "txt2img")
    watchdog = load_settings().watchdog
    assert watchdog.rss_mb == 8000 and watchdog.watches_idle
    assert watchdog.warmup == WarmupSettings(template="txt2img")


def test_a_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"watchdog\.stall_s"):
        load_settings({"watchdog": {"stall_s": 0}})


def test_a_warm_up_names_a_workflow_or_a_template() -> None:
    with pytest.raises(ValueError, match=r"either 'workflow' .* or 'template', not both"):
        WarmupSettings()
    with pytest.raises(ValueError, match=r"either 'workflow' .* or 'template', not both"):
        WarmupSettings(workflow=Path("w.json"), template="txt2img")
    with pytest.raises(ValueError, match="'params' go with a 'template'"):
        WarmupSettings(workflow=Path("w.json"), params={"steps": 2})


def test_warm_ups_from_a_file_and_a_template(tmp_path: Path, library: TemplateLibrary) -> None:
    path = tmp_path / "warm.json"
    path.write_text(json.dumps(ECHO), encoding="utf-8")
    settings = WatchdogSettings(
        warmup=WarmupSettings(workflow=path),
        warmup_instances={
            1: WarmupSettings(template="txt2img", params={"steps": 2, "seed": 5}),
            2: None,
        },
    )
    warmup = build_warmup(settings, library)
    assert warmup is not None and warmup.timeout_s == 600.0
    assert warmup.graph_for(0) == ECHO
    own = warmup.graph_for(1)
    assert own is not None and own["3"]["inputs"]["steps"] == 2 and own["3"]["inputs"]["seed"] == 5
    assert warmup.graph_for(2) is None
    assert build_warmup(WatchdogSettings(), library) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"watchdog\.warmup: cannot read .*missing\.json: No such file or directory"),
        ("{not json", r"watchdog\.warmup: .*missing\.json is not JSON"),
        (
            json.dumps({"nodes": [], "links": []}),
            r"watchdog\.warmup: this is a UI-format workflow",
        ),
    ],
)
def test_an_unreadable_warm_up_file_stops_the_start(
    tmp_path: Path, library: TemplateLibrary, content: str | None, message: str
) -> None:
    path = tmp_path / "missing.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        build_warmup(WatchdogSettings(warmup=WarmupSettings(workflow=path)), library)


def test_an_unknown_template_or_bad_parameter_names_the_instance(library: TemplateLibrary) -> None:
    unknown = WatchdogSettings(warmup_instances={3: WarmupSettings(template="nope")})
    with pytest.raises(ConfigError, match=r"watchdog\.warmup_instances\.3: .*nope"):
        build_warmup(unknown, library)
    bad = WatchdogSettings(warmup=WarmupSettings(template="txt2img", params={"steps": 0}))
    with pytest.raises(ConfigError, match=r"watchdog\.warmup: .*steps"):
        build_warmup(bad, library)


def test_the_readme_example_is_valid_settings(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Watchdogs\n", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "comfyfleet.yaml"
    config.write_text(f"workspace: {tmp_path}\n{example}", encoding="utf-8")
    watchdog = load_settings({}, config_file=config).watchdog
    assert watchdog.stall_s == 300 and watchdog.warmup == WarmupSettings(
        workflow=Path("warmup.json")
    )
    assert watchdog.warmup_instances == {1: None}
