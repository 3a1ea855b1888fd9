"""Every generated deployment file passes its validator, with no container engine: hadolint and
our own rules for the Dockerfile, the Compose Specification's JSON Schema, Kubernetes' OpenAPI
schemas (strict: no unknown field), `systemd-analyze verify` (where it exists) and our own
reading of the units, and supervisord's own config parser.

Each check runs on the committed files of the default configuration and on the files rendered
for a custom one (tests/deploy_cases.py), and each validator is shown to reject a broken file.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from kubernetes_validate.utils import latest_version

from comfyfleet import __version__
from tests.deploy_cases import (
    REFERENCE_USER,
    REFERENCE_WORKSPACE,
    REPO,
    clean_environment,
    committed_files,
    custom_deployment,
    render_all,
)

COMPOSE_SCHEMA = REPO / "tests" / "fixtures" / "compose-spec" / "compose-spec.json"
KUBERNETES = [latest_version(), "1.30.0"]
"""The newest Kubernetes the schemas know, and an older one still in wide use."""


@dataclass(frozen=True)
class Case:
    name: str
    files: dict[str, dict[str, str]]
    workspace: str
    user: str


@pytest.fixture(params=["committed", "custom"])
def case(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    if request.param == "committed":
        return Case("committed", committed_files(), REFERENCE_WORKSPACE, REFERENCE_USER)
    clean_environment(monkeypatch)
    executable = tmp_path / "bin" / "comfyfleet"
    executable.parent.mkdir()
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    user = pwd.getpwuid(os.getuid()).pw_name
    deployment = custom_deployment(tmp_path / "custom", executable, user)
    (deployment.settings.workspace / "logs").mkdir(parents=True)
    return Case("custom", render_all(deployment), str(deployment.settings.workspace), user)


def tool(name: str) -> str:
    """A command of the test environment (the venv's bin first: hadolint comes from there)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: install the project's test extra"
    return found


# --- Dockerfile ---------------------------------------------------------------------------------


def hadolint(text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / "Dockerfile"
    path.write_text(text)
    return subprocess.run(
        [tool("hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_dockerfile_passes_hadolint(case: Case, tmp_path: Path) -> None:
    done = hadolint(case.files["docker"]["Dockerfile"], tmp_path)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_hadolint_rejects_a_dockerfile_that_ends_as_root(case: Case, tmp_path: Path) -> None:
    broken = case.files["docker"]["Dockerfile"] + "USER root\n"
    done = hadolint(broken, tmp_path)
    assert done.returncode == 1
    assert "DL3002" in done.stdout


def stages(text: str, folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Instructions per build stage, by stage name (dockerfile-parse's reading)."""
    parser = DockerfileParser(path=str(folder / "Dockerfile"))
    parser.content = text
    found: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            name = item["value"].split()[-1]
            current = found.setdefault(name, [])
        current.append(item)
    return found


def effective(name: str, by_stage: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A stage's instructions with those of the stages it is built on, first to last."""
    own = by_stage[name]
    base = own[0]["value"].split()[0]
    return (effective(base, by_stage) if base in by_stage else []) + own


def test_each_image_variant_follows_the_rules_that_matter(case: Case, tmp_path: Path) -> None:
    by_stage = stages(case.files["docker"]["Dockerfile"], tmp_path)
    assert list(by_stage) == ["builder", "minimal", "standard", "full"]
    for item in (items[0] for items in by_stage.values()):
        image = item["value"].split()[0]
        if image not in by_stage:
            assert re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*", image), f"unpinned base {image}"
    for variant in ("minimal", "standard", "full"):
        items = effective(variant, by_stage)
        last = {item["instruction"]: item["value"] for item in items}
        assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", last["USER"]), f"{variant} runs as root"
        assert json.loads(last["VOLUME"]) == ["/workspace", "/models"]
        assert "/ready" in last["HEALTHCHECK"]
        assert json.loads(last["ENTRYPOINT"])[-3:] == ["python", "-m", "comfyfleet.deploy"]
        runs = " ".join(item["value"] for item in items if item["instruction"] == "RUN")
        wheel = f"/tmp/wheels/comfyfleet-{__version__}-py3-none-any.whl[s3,azure,images]"
        assert f'pip install "{wheel}"' in runs
        assert "comfyfleet install --workspace /opt/comfyfleet/install" in runs
    copies = [item["value"] for item in by_stage["standard"] if item["instruction"] == "COPY"]
    assert copies == ["${DEPLOY_DIR}/nodes.yaml /opt/comfyfleet/nodes.yaml"]


def test_the_build_context_has_what_the_dockerfile_copies() -> None:
    """The committed Dockerfile builds from the repository root: its COPY sources exist there
    and its ignore file keeps them."""
    text = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    deploy_dir = re.search(r"^ARG DEPLOY_DIR=(\S+)$", text, re.M)
    assert deploy_dir is not None and deploy_dir.group(1) == "deploy/docker"
    needed = ["pyproject.toml", "README.md", "src", "deploy/docker/nodes.yaml"]
    for path in needed:
        assert (REPO / path).exists(), path
    ignore = (REPO / "deploy" / "docker" / "Dockerfile.dockerignore").read_text()
    patterns = [line for line in ignore.splitlines() if line and not line.startswith("#")]
    for path in needed:
        first = path.split("/")[0]
        assert first not in patterns and path not in patterns, f"{path} is ignored"


# --- compose ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    return jsonschema.Draft7Validator(schema)


def compose_errors(validator: jsonschema.Draft7Validator, document: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


@pytest.mark.parametrize("name", ["compose.yaml", "compose.fleet.yaml"])
def test_the_compose_files_match_the_compose_specification(
    case: Case, name: str, compose_validator: jsonschema.Draft7Validator
) -> None:
    document = yaml.safe_load(case.files["compose"][name])
    assert compose_errors(compose_validator, document) == []


def test_the_compose_schema_rejects_a_misspelt_key(
    case: Case, compose_validator: jsonschema.Draft7Validator
) -> None:
    document = yaml.safe_load(case.files["compose"]["compose.yaml"])
    broken = copy.deepcopy(document)
    broken["services"]["comfyfleet"]["volume"] = broken["services"]["comfyfleet"].pop("volumes")
    assert compose_errors(compose_validator, broken) == [
        "['services', 'comfyfleet']: 'volume' does not match any of the regexes: '^x-'"
    ]


def test_every_compose_variable_is_explained_in_the_env_example(case: Case) -> None:
    text = case.files["compose"]["compose.fleet.yaml"]
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))
    assert used == {
        "POSTGRES_PASSWORD",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "COMFYFLEET_DB_HOST",
        "COMFYFLEET_S3_URL",
    }
    example = case.files["compose"]["env.example"]
    for name in used:
        assert re.search(rf"^(# )?{name}=", example, re.M), name


def test_compose_services_mount_the_settings_they_are_told_to_read(case: Case) -> None:
    for name in ("compose.yaml", "compose.fleet.yaml"):
        document = yaml.safe_load(case.files["compose"][name])
        for service, spec in document["services"].items():
            if spec.get("image", "").startswith("comfyfleet:"):
                assert spec["environment"]["COMFYFLEET_CONFIG"] == "/etc/comfyfleet/comfyfleet.yaml"
                assert "./comfyfleet.yaml:/etc/comfyfleet/comfyfleet.yaml:ro" in spec["volumes"], (
                    service
                )


# --- Kubernetes ---------------------------------------------------------------------------------


def manifests(case: Case) -> Iterator[tuple[str, dict[str, Any]]]:
    for name in ("settings.yaml", "gateway.yaml", "agent.yaml"):
        for document in yaml.safe_load_all(case.files["k8s"][name]):
            yield name, document


@pytest.mark.parametrize("version", KUBERNETES)
def test_the_kubernetes_manifests_match_the_openapi_schemas(case: Case, version: str) -> None:
    kinds = []
    for name, document in manifests(case):
        kubernetes_validate.validate(document, version, strict=True)
        kinds.append((name, document["kind"]))
    assert kinds == [
        ("settings.yaml", "ConfigMap"),
        ("gateway.yaml", "Deployment"),
        ("gateway.yaml", "Service"),
        ("agent.yaml", "PersistentVolumeClaim"),
        ("agent.yaml", "DaemonSet"),
    ]


def test_the_kubernetes_schemas_reject_an_unknown_field(case: Case) -> None:
    deployment = next(doc for _, doc in manifests(case) if doc["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError, match="'pth' was unexpected"):
        kubernetes_validate.validate(broken, latest_version(), strict=True)


def test_the_gateway_is_probed_on_health_and_ready_and_the_agents_run_on_gpu_nodes(
    case: Case,
) -> None:
    by_kind = {doc["kind"]: doc for _, doc in manifests(case)}
    gateway = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    agent = by_kind["DaemonSet"]["spec"]["template"]["spec"]
    assert agent["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "nvidia.com/gpu" in agent["containers"][0]["resources"]["limits"]
    for pod in (by_kind["Deployment"]["spec"]["template"]["spec"], agent):
        assert pod["securityContext"]["runAsNonRoot"] is True
    configmap = yaml.safe_load(by_kind["ConfigMap"]["data"]["comfyfleet.yaml"])
    public = (configmap or {}).get("auth", {}).get("public_paths")
    assert public == (["/health", "/ready"] if case.name == "custom" else None)


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
