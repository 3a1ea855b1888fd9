"""Settings: flags > environment > settings file > defaults, and errors that name the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from comfyfleet.config import find_config_file, load_settings
from comfyfleet.errors import ConfigError
from comfyfleet.provision import DEFAULT_COMFYUI_VERSION


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No COMFYFLEET_* variable from the machine running the tests, and an empty cwd."""
    for name in list(os.environ):
        if name.upper().startswith("COMFYFLEET_"):
            monkeypatch.delenv(name)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults -----------------------------------------------------------------------------------


def test_defaults_without_file_env_or_flags(isolated: Path) -> None:
    settings = load_settings()
    assert settings.fleet.base_port == 8188
    assert settings.fleet.host == "127.0.0.1"
    assert settings.fleet.port_conflict == "next"
    assert settings.fleet.gpus is None
    assert settings.install.source == "git"
    assert settings.install.comfyui_version == DEFAULT_COMFYUI_VERSION
    assert settings.workspace == isolated / "comfyfleet-workspace"
    assert settings.models_root is None


# --- precedence ---------------------------------------------------------------------------------


def test_file_overrides_defaults(isolated: Path) -> None:
    write(isolated / "comfyfleet.yaml", "fleet:\n  base_port: 9000\n  host: 0.0.0.0\n")
    settings = load_settings()
    assert settings.fleet.base_port == 9000
    assert settings.fleet.host == "0.0.0.0"
    assert settings.fleet.start_retries == 3  # untouched default


def test_env_overrides_file_per_nested_key(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(isolated / "comfyfleet.yaml", "fleet:\n  base_port: 9000\n  host: 0.0.0.0\n")
    monkeypatch.setenv("COMFYFLEET_FLEET__BASE_PORT", "9100")
    settings = load_settings()
    assert settings.fleet.base_port == 9100
    assert settings.fleet.host == "0.0.0.0"  # the file's other fleet keys survive


def test_flags_override_env_and_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(isolated / "comfyfleet.yaml", "fleet:\n  base_port: 9000\n  start_retries: 7\n")
    monkeypatch.setenv("COMFYFLEET_FLEET__BASE_PORT", "9100")
    monkeypatch.setenv("COMFYFLEET_FLEET__HOST", "10.0.0.1")
    settings = load_settings({"fleet": {"base_port": 9200}})
    assert settings.fleet.base_port == 9200
    assert settings.fleet.host == "10.0.0.1"
    assert settings.fleet.start_retries == 7


def test_flags_left_as_none_do_not_hide_env_or_file(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(isolated / "comfyfleet.yaml", "install:\n  torch: cu128\n")
    monkeypatch.setenv("COMFYFLEET_FLEET__BASE_PORT", "9100")
    settings = load_settings(
        {
            "workspace": None,
            "install": {"torch": None, "source": None},
            "fleet": {"base_port": None, "host": None},
        }
    )
    assert settings.fleet.base_port == 9100
    assert settings.install.torch == "cu128"
    assert settings.install.source == "git"
    assert settings.fleet.host == "127.0.0.1"


def test_top_level_env_variable(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_MODELS_ROOT", "/srv/models")
    assert load_settings().models_root == Path("/srv/models")


# --- finding the settings file ------------------------------------------------------------------


def test_explicit_config_file_wins_over_env_and_cwd(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = write(tmp_path / "explicit.yaml", "fleet:\n  base_port: 7001\n")
    from_env = write(tmp_path / "from-env.yaml", "fleet:\n  base_port: 7002\n")
    write(isolated / "comfyfleet.yaml", "fleet:\n  base_port: 7003\n")
    monkeypatch.setenv("COMFYFLEET_CONFIG", str(from_env))
    assert load_settings(config_file=explicit).fleet.base_port == 7001
    assert find_config_file(explicit, None) == explicit


def test_config_env_variable_wins_over_cwd_file(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = write(tmp_path / "from-env.yaml", "fleet:\n  base_port: 7002\n")
    write(isolated / "comfyfleet.yaml", "fleet:\n  base_port: 7003\n")
    monkeypatch.setenv("COMFYFLEET_CONFIG", str(from_env))
    assert load_settings().fleet.base_port == 7002


def test_cwd_file_wins_over_workspace_file(isolated: Path, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    write(workspace / "comfyfleet.yaml", "fleet:\n  base_port: 7004\n")
    write(isolated / "comfyfleet.yaml", "fleet:\n  base_port: 7003\n")
    assert load_settings({"workspace": workspace}).fleet.base_port == 7003


def test_workspace_file_found_from_workspace_flag(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    write(workspace / "comfyfleet.yaml", "fleet:\n  base_port: 7004\n")
    settings = load_settings({"workspace": workspace})
    assert settings.fleet.base_port == 7004
    assert settings.workspace == workspace


def test_workspace_file_found_from_workspace_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = tmp_path / "ws"
    write(workspace / "comfyfleet.yaml", "fleet:\n  base_port: 7004\n")
    monkeypatch.setenv("COMFYFLEET_WORKSPACE", str(workspace))
    assert load_settings().fleet.base_port == 7004


def test_no_file_anywhere_is_fine(tmp_path: Path) -> None:
    assert find_config_file(None, tmp_path / "ws") is None


def test_missing_explicit_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        load_settings(config_file=missing)


def test_missing_config_from_env_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFYFLEET_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="COMFYFLEET_CONFIG") as info:
        load_settings()
    assert "nope.yaml" in str(info.value)


# --- bad values ---------------------------------------------------------------------------------


def test_bad_env_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_FLEET__BASE_PORT", "eighty")
    with pytest.raises(ConfigError, match=r"fleet\.base_port"):
        load_settings()


def test_out_of_range_flag_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"fleet\.base_port"):
        load_settings({"fleet": {"base_port": 70000}})


def test_bad_file_value_names_the_setting_and_the_file(isolated: Path) -> None:
    path = write(isolated / "comfyfleet.yaml", "fleet:\n  port_conflict: sometimes\n")
    with pytest.raises(ConfigError, match=r"fleet\.port_conflict") as info:
        load_settings()
    assert str(path) in str(info.value)


def test_unknown_key_in_file_is_refused(isolated: Path) -> None:
    write(isolated / "comfyfleet.yaml", "fleet:\n  base_prot: 9000\n")
    with pytest.raises(ConfigError, match=r"fleet\.base_prot"):
        load_settings()


def test_unknown_top_level_section_in_file_is_refused(isolated: Path) -> None:
    write(isolated / "comfyfleet.yaml", "fleets:\n  base_port: 9000\n")
    with pytest.raises(ConfigError, match="fleets"):
        load_settings()


def test_file_that_is_not_a_mapping_is_refused(isolated: Path) -> None:
    path = write(isolated / "comfyfleet.yaml", "- fleet\n- install\n")
    with pytest.raises(ConfigError, match="mapping") as info:
        load_settings()
    assert str(path) in str(info.value)


def test_unparsable_yaml_is_a_config_error(isolated: Path) -> None:
    path = write(isolated / "comfyfleet.yaml", "fleet: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read settings file") as info:
        load_settings()
    assert str(path) in str(info.value)


def test_empty_file_means_defaults(isolated: Path) -> None:
    write(isolated / "comfyfleet.yaml", "")
    assert load_settings().fleet.base_port == 8188


# --- gpus ---------------------------------------------------------------------------------------


def test_gpus_from_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_FLEET__GPUS", "0,1")
    assert load_settings().fleet.gpus == (0, 1)


def test_gpus_from_comma_separated_flag_and_file(isolated: Path) -> None:
    assert load_settings({"fleet": {"gpus": "2, 3"}}).fleet.gpus == (2, 3)
    write(isolated / "comfyfleet.yaml", "fleet:\n  gpus: '0,1'\n")
    assert load_settings().fleet.gpus == (0, 1)


def test_single_gpu_number(isolated: Path) -> None:
    write(isolated / "comfyfleet.yaml", "fleet:\n  gpus: 1\n")
    assert load_settings().fleet.gpus == (1,)


def test_bad_gpu_list_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"fleet\.gpus"):
        load_settings({"fleet": {"gpus": "0,x"}})


# --- paths --------------------------------------------------------------------------------------


def test_relative_paths_become_absolute_from_cwd(isolated: Path) -> None:
    write(
        isolated / "comfyfleet.yaml",
        "models_root: shared/models\ninput_dir: in\noutput_dir: out\n"
        "install:\n  nodes_file: nodes.yaml\nfleet:\n  pre_start_hook: hooks/pre.sh\n",
    )
    settings = load_settings({"workspace": Path("ws")})
    assert settings.workspace == isolated / "ws"
    assert settings.models_root == isolated / "shared" / "models"
    assert settings.input_dir == isolated / "in"
    assert settings.output_dir == isolated / "out"
    assert settings.install.nodes_file == isolated / "nodes.yaml"
    assert settings.fleet.pre_start_hook == isolated / "hooks" / "pre.sh"
    for path in (settings.workspace, settings.models_root, settings.install.nodes_file):
        assert path is not None and path.is_absolute()


def test_absolute_paths_survive_a_later_chdir(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings({"workspace": Path("ws")})
    monkeypatch.chdir(tmp_path)
    assert settings.workspace == isolated / "ws"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.fleet.base_port = 1  # type: ignore[misc]


def test_the_readme_configuration_example_is_valid_settings(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "comfyfleet.yaml"
    config.write_text(example.replace("/srv/comfy", str(tmp_path / "ws")), encoding="utf-8")
    settings = load_settings({}, config_file=config)
    assert settings.serve.max_queued == 1000
    assert settings.storage.url == "file://"
    assert settings.webhooks.retry_for_s == 86400
