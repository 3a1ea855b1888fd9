"""The generated systemd units and supervisord program pass their validators: `systemd-analyze
verify` (where it exists) and our own reading of the units, and supervisord's own config parser;
each validator is also shown to reject a broken file. Cases: see tests/deploy_cases.py."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_cases import CASES, Case, make_case


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    return make_case(request.param, tmp_path, monkeypatch)


# --- systemd ------------------------------------------------------------------------------------


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every setting of a unit file, in order."""
    entries, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), raw
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {raw!r}"
        entries.append((section, key, value))
    return entries


def units(case: Case) -> dict[str, str]:
    return {name: text for name, text in case.files["systemd"].items() if name.endswith(".service")}


def test_the_units_are_hardened_services_of_their_role(case: Case) -> None:
    for name, text in units(case).items():
        entries = unit_entries(text)
        assert [s for s in dict.fromkeys(s for s, _, _ in entries)] == [
            "Unit",
            "Service",
            "Install",
        ]
        service = {key: value for section, key, value in entries if section == "Service"}
        role = {"comfyfleet.service": "serve"}.get(name, name.split("-")[-1].split(".")[0])
        assert service["ExecStart"].endswith(f"/comfyfleet {role}")
        assert service["User"] == case.user
        for key, value in {
            "Type": "exec",
            "KillMode": "mixed",
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "PrivateTmp": "yes",
            "CapabilityBoundingSet": "",
            "EnvironmentFile": "-/etc/comfyfleet/comfyfleet.env",
        }.items():
            assert service[key] == value, (name, key)


@pytest.fixture
def systemd_root(tmp_path: Path) -> Path:
    """A file system root for `systemd-analyze verify --root`: the system's targets, and the
    comfyfleet command where the units say it is."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here (the units' own reading still runs)")
    root = tmp_path / "root"
    targets = root / "usr" / "lib" / "systemd" / "system"
    targets.mkdir(parents=True)
    for target in Path("/usr/lib/systemd/system").glob("*.target"):
        shutil.copy(target, targets)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    return root


def verify(root: Path, name: str, text: str) -> subprocess.CompletedProcess[str]:
    (root / "etc" / "systemd" / "system" / name).write_text(text)
    executable = next(v for _, k, v in unit_entries(text) if k == "ExecStart").split()[0]
    fake = root / executable.lstrip("/")
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_units_pass_systemd_analyze_verify(case: Case, systemd_root: Path) -> None:
    for name, text in units(case).items():
        done = verify(systemd_root, name, text)
        assert (done.returncode, done.stderr) == (0, ""), name


def test_systemd_analyze_reports_a_misspelt_setting(case: Case, systemd_root: Path) -> None:
    text = units(case)["comfyfleet.service"].replace("KillMode=", "KilMode=")
    done = verify(systemd_root, "comfyfleet.service", text)
    assert "Unknown key 'KilMode' in section [Service]" in done.stderr


# --- supervisord --------------------------------------------------------------------------------


def supervisor_programs(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None = None
) -> list[Any]:
    """The program sections as supervisord's own parser reads them. For the committed file the
    checks of this machine are answered as the target machine would (its service user exists,
    its workspace has a logs folder); the custom case needs no such help."""
    from supervisor import datatypes, options

    if case.name == "committed":
        real_dirpath, real_uid = datatypes.existing_dirpath, options.name_to_uid

        def dirpath(value: str) -> str:
            inside = value.startswith(case.workspace + "/")
            return value if inside else real_dirpath(value)

        def name_to_uid(name: str) -> tuple[int, int]:
            return (990, 990) if name == case.user else real_uid(name)

        monkeypatch.setattr(datatypes, "existing_dirpath", dirpath)
        monkeypatch.setattr(options, "existing_dirpath", dirpath)
        monkeypatch.setattr(options, "name_to_uid", name_to_uid)
    program = tmp_path / "comfyfleet.conf"
    program.write_text(text if text is not None else case.files["supervisord"]["comfyfleet.conf"])
    main = tmp_path / "supervisord.conf"
    main.write_text(
        f"[supervisord]\nlogfile={tmp_path}/supervisord.log\npidfile={tmp_path}/s.pid\n"
        f"[include]\nfiles = {program}\n"
    )
    server = options.ServerOptions()
    server.stderr = said = io.StringIO()  # its default is the sys.stderr of its import
    try:
        server.realize(args=["-c", str(main)])
    except SystemExit as exc:
        raise ValueError(said.getvalue()) from exc
    return [config for group in server.process_group_configs for config in group.process_configs]


def test_supervisord_reads_the_program(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (program,) = supervisor_programs(case, tmp_path, monkeypatch)
    assert program.name == "comfyfleet"
    shell, flag, script = program.command.split(" ", 2)
    assert (shell, flag) == ("/bin/sh", "-c")
    assert script.startswith("'set -a; if [ -r /etc/comfyfleet/comfyfleet.env ]; then")
    assert script.endswith("/comfyfleet serve'")
    assert program.directory == case.workspace
    assert program.environment["COMFYFLEET_WORKSPACE"] == case.workspace
    assert (program.stopsignal, program.stopasgroup, program.killasgroup) == (15, False, True)
    assert program.stdout_logfile == f"{case.workspace}/logs/serve.log"


def test_supervisord_refuses_a_broken_program(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = case.files["supervisord"]["comfyfleet.conf"].replace(
        "stopsignal=TERM", "stopsignal=NOPE"
    )
    with pytest.raises(ValueError, match="value 'NOPE' is not a valid signal name"):
        supervisor_programs(case, tmp_path, monkeypatch, text)
