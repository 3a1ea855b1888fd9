"""Every generated container file passes its validator, with no container engine: hadolint and
our own rules for the Dockerfile, the Compose Specification's JSON Schema, Kubernetes' OpenAPI
schemas (strict: no unknown field). The host files are checked in test_deploy_validate_hosts.

Each check runs on the committed files of the default configuration and on the files rendered
for a custom one (tests/deploy_cases.py), and each validator is shown to reject a broken file.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from kubernetes_validate.utils import latest_version

from comfyfleet import __version__
from tests.deploy_cases import CASES, REPO, Case, make_case

COMPOSE_SCHEMA = REPO / "tests" / "schemas" / "compose-spec" / "compose-spec.json"
KUBERNETES = [latest_version(), "1.30.0"]
"""The newest Kubernetes the schemas know, and an older one still in wide use."""


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    return make_case(request.param, tmp_path, monkeypatch)


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
    assert public == (["/health", "/api/v2/health", "/ready"] if case.name == "custom" else None)
