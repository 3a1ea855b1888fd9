"""Deployment files from the settings: what each target carries, what never goes in (secrets,
paths of this machine), and the errors for what a target cannot carry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from comfyfleet.config import Settings
from comfyfleet.deploy import TARGETS, DeployError, Deployment, check_target, render
from tests.deploy_cases import SECRETS, clean_environment, custom_deployment, render_all


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_environment(monkeypatch)


@pytest.fixture
def custom(tmp_path: Path) -> dict[str, dict[str, str]]:
    deployment = custom_deployment(tmp_path, Path("/opt/fleet/bin/comfyfleet"), "fleet")
    return render_all(deployment)


def settings(**data: object) -> Settings:
    return Settings.model_validate({"workspace": "/var/lib/comfyfleet", **data})


# --- bad input ----------------------------------------------------------------------------------


def test_an_unknown_target_is_an_error_naming_the_supported_ones() -> None:
    with pytest.raises(DeployError) as caught:
        check_target("helm")
    assert caught.value.message == "unknown export target 'helm'"
    assert caught.value.hint == (
        "supported: docker, compose, systemd, supervisord, k8s, or all for every one"
    )


def test_all_stands_for_every_target() -> None:
    assert check_target("all") == TARGETS == ("docker", "compose", "systemd", "supervisord", "k8s")


def test_an_unknown_variant_is_an_error_naming_the_variants() -> None:
    with pytest.raises(DeployError) as caught:
        Deployment(settings(), variant="huge")
    assert caught.value.message == "unknown image variant 'huge'"
    assert caught.value.hint == "choose one of minimal, standard, full"


@pytest.mark.parametrize("torch", ["cpu", "rocm", "torch==2.7.1", "existing"])
def test_a_torch_that_is_not_cuda_cannot_go_into_the_cuda_image(torch: str) -> None:
    with pytest.raises(DeployError) as caught:
        render("docker", Deployment(settings(install={"torch": torch})))
    assert caught.value.message == f"install.torch is '{torch}', but the image is a CUDA image"


def test_a_cpu_torch_does_not_stop_the_host_targets() -> None:
    rendered = render("systemd", Deployment(settings(install={"torch": "cpu"})))
    assert "comfyfleet.service" in rendered.files


@pytest.mark.parametrize("source", ["path:/srv/ComfyUI", "archive:/tmp/comfy.zip"])
def test_a_comfyui_source_of_this_machine_cannot_go_into_the_image(source: str) -> None:
    with pytest.raises(DeployError) as caught:
        render("docker", Deployment(settings(install={"source": source})))
    assert "an image build cannot see" in caught.value.message
    assert source in caught.value.message


def test_a_custom_node_folder_of_this_machine_cannot_go_into_the_image(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text("nodes:\n  - git: https://example.test/a\n  - path: ./mine\n", "utf-8")
    with pytest.raises(DeployError) as caught:
        render("docker", Deployment(settings(install={"nodes_file": nodes})))
    assert caught.value.message == (
        f"nodes list {nodes} entry 2: './mine' is a folder of this machine, which an image "
        "build cannot see"
    )


def test_a_relative_executable_is_refused() -> None:
    with pytest.raises(DeployError, match="must be an absolute path, not 'bin/comfyfleet'"):
        Deployment(settings(), executable=Path("bin/comfyfleet"))


# --- secrets and paths stay out -----------------------------------------------------------------


def test_no_secret_of_the_settings_is_written_into_any_file(
    custom: dict[str, dict[str, str]],
) -> None:
    for target, files in custom.items():
        for name, text in files.items():
            for what, secret in SECRETS.items():
                assert secret not in text, f"the {what} is in {target}/{name}"


def test_the_env_examples_name_the_variables_that_must_hold_the_secrets(
    custom: dict[str, dict[str, str]],
) -> None:
    example = custom["compose"]["comfyfleet.env.example"]
    for name in (
        "COMFYFLEET_AUTH__API_KEY",
        "COMFYFLEET_AUTH__SESSION_SECRET",
        "COMFYFLEET_WEBHOOKS__SECRET",
        "PGPASSWORD",
        "COMFYFLEET_STORAGE__SECRET_ACCESS_KEY",
        "COMFYFLEET_STORAGE_TARGETS__ARCHIVE__AZURE_CONNECTION_STRING",
        "COMFYFLEET_STORAGE_TARGETS__PUSH__HTTP_HEADERS__AUTHORIZATION",
    ):
        assert f"# {name}=\n" in example
    assert custom["systemd"]["comfyfleet.env.example"] == example.replace(
        "export compose", "export systemd"
    )
    assert "# COMFYFLEET_STORAGE__SECRET_ACCESS_KEY=\n" in custom["k8s"]["secrets.example.env"]


def test_containers_carry_the_settings_without_secrets_paths_or_defaults(
    custom: dict[str, dict[str, str]],
) -> None:
    carried = yaml.safe_load(custom["compose"]["comfyfleet.yaml"])
    assert carried == {
        "install": {"torch": "cu126", "torch_index_url": "https://mirror@m.test/whl"},
        "fleet": {"gpus": [0, 1], "startup_timeout_s": 240.0, "stop_grace_s": 40.0},
        "auth": {"enabled": True, "public_paths": ["/health", "/api/v2/health", "/ready"]},
        "serve": {
            "host": "0.0.0.0",
            "port": 9090,
            "store": "postgresql://fleet@db.test:5432/jobs",
            "max_queued": 50,
        },
        "storage": {
            "url": "s3://outputs-bucket/jobs",
            "endpoint_url": "https://s3.example.test",
            "access_key_id": "AKIAEXAMPLEKEYID",
        },
        "storage_targets": {
            "archive": {"url": "az://archive-container"},
            "push": {"url": "https://push.example.test/out/"},
        },
    }
    configmap = yaml.safe_load(custom["k8s"]["settings.yaml"])
    assert yaml.safe_load(configmap["data"]["comfyfleet.yaml"]) == carried


def test_the_export_says_what_it_left_behind_and_chose(tmp_path: Path) -> None:
    deployment = custom_deployment(tmp_path, Path("/opt/fleet/bin/comfyfleet"), "fleet")
    notes = render("compose", deployment).notes
    assert notes == (
        "auth is on: /ready is added to auth.public_paths so probes can ask it",
        "paths of this machine stay behind (the containers use their volumes): models_root, "
        "install.nodes_file",
    )
    assert render("docker", deployment).notes == (
        "install.torch_index_url has a password: left out of the Dockerfile (pass the mirror as "
        "a build secret instead)",
    )


# --- what each target carries -------------------------------------------------------------------


def test_the_image_installs_the_chosen_cuda_torch_and_the_git_nodes(
    custom: dict[str, dict[str, str]],
) -> None:
    dockerfile = custom["docker"]["Dockerfile"]
    assert "FROM nvidia/cuda:12.6.3-base-ubuntu24.04 AS minimal\n" in dockerfile
    assert "--source git --torch cu126 --comfyui-version 0.33.0" in dockerfile
    assert "urlopen('http://127.0.0.1:9090/ready'" in dockerfile
    assert "--start-period=300s" in dockerfile
    nodes = yaml.safe_load(custom["docker"]["nodes.yaml"])
    assert nodes == {"nodes": [{"git": "https://example.test/org/some-nodes", "ref": "v1.4.0"}]}


def test_the_image_installs_the_node_sets_with_the_own_list_winning(tmp_path: Path) -> None:
    own = tmp_path / "nodes.yaml"
    own.write_text(
        "nodes:\n  - git: https://example.test/me/ComfyUI-KJNodes\n    ref: mine\n", "utf-8"
    )
    install = {"nodes_file": str(own), "node_sets": ["video"], "torch": "cu126"}
    rendered = render("docker", Deployment(settings(install=install)))
    entries = yaml.safe_load(rendered.files["nodes.yaml"])["nodes"]
    kj = [e for e in entries if e["git"].endswith("/ComfyUI-KJNodes")]
    assert kj == [{"git": "https://example.test/me/ComfyUI-KJNodes", "ref": "mine"}]
    frame = next(e for e in entries if e["git"].endswith("/ComfyUI-Frame-Interpolation"))
    assert frame["requirements"] == "requirements-no-cupy.txt" and len(frame["ref"]) == 40
    assert len(entries) == 7  # the video set's seven, one of them replaced


def test_auto_torch_becomes_the_default_cuda_build_with_a_note() -> None:
    rendered = render("docker", Deployment(settings()))
    assert "FROM nvidia/cuda:12.8.1-base-ubuntu24.04 AS minimal\n" in rendered.files["Dockerfile"]
    assert rendered.notes[0].startswith("install.torch is 'auto': the image gets the cu128 build")


def test_compose_publishes_the_gateway_where_the_settings_say_it_listens(
    custom: dict[str, dict[str, str]],
) -> None:
    default = yaml.safe_load(render("compose", Deployment(settings())).files["compose.yaml"])
    assert default["services"]["comfyfleet"]["ports"] == ["127.0.0.1:8080:8080"]
    opened = yaml.safe_load(custom["compose"]["compose.yaml"])
    assert opened["services"]["comfyfleet"]["ports"] == ["9090:9090"]
    assert opened["services"]["comfyfleet"]["image"] == "comfyfleet:0.1.0-full"


def test_kubernetes_uses_the_settings_store_and_gpus(custom: dict[str, dict[str, str]]) -> None:
    daemonset = list(yaml.safe_load_all(custom["k8s"]["agent.yaml"]))[1]
    pod = daemonset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 2}
    assert {"name": "COMFYFLEET_SERVE__STORE", "value": "postgresql://fleet@db.test:5432/jobs"} in (
        container["env"]
    )
    assert pod["terminationGracePeriodSeconds"] == 70
    names = [item["name"] for item in container["env"]]
    assert "COMFYFLEET_STORAGE__URL" not in names  # the settings' S3 store is carried


def test_kubernetes_names_placeholders_for_a_local_store_with_notes() -> None:
    rendered = render("k8s", Deployment(settings()))
    gateway = next(iter(yaml.safe_load_all(rendered.files["gateway.yaml"])))
    env = gateway["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "COMFYFLEET_CONFIG", "value": "/etc/comfyfleet/comfyfleet.yaml"},
        {
            "name": "COMFYFLEET_SERVE__STORE",
            "value": "postgresql://comfyfleet@postgres:5432/comfyfleet",
        },
        {"name": "COMFYFLEET_STORAGE__URL", "value": "s3://comfyfleet/outputs"},
    ]
    assert [note.split(":")[0] for note in rendered.notes] == [
        "serve.store is not PostgreSQL",
        "storage.url is local",
    ]


def test_systemd_opens_exactly_the_service_folders(tmp_path: Path) -> None:
    home = settings(workspace="/home/alice/comfy 100%", models_root="/mnt/models")
    unit = render("systemd", Deployment(home, service_user="alice")).files["comfyfleet.service"]
    assert "ProtectHome=read-only\n" in unit
    assert 'ReadWritePaths="-/home/alice/comfy 100%%" -/mnt/models\n' in unit
    assert "WorkingDirectory=/home/alice/comfy 100%%\n" in unit
    assert "StateDirectory" not in unit
    service = render("systemd", Deployment(settings())).files["comfyfleet.service"]
    assert "ProtectHome=yes\n" in service
    assert "StateDirectory=comfyfleet\n" in service
    assert "ReadWritePaths" not in service  # the state directory is writable already


def test_the_three_units_run_the_three_roles() -> None:
    files = render("systemd", Deployment(settings())).files
    starts = {
        name: next(line for line in text.splitlines() if line.startswith("ExecStart="))
        for name, text in files.items()
        if name.endswith(".service")
    }
    assert starts == {
        "comfyfleet.service": "ExecStart=/opt/comfyfleet/bin/comfyfleet serve",
        "comfyfleet-gateway.service": "ExecStart=/opt/comfyfleet/bin/comfyfleet gateway",
        "comfyfleet-agent.service": "ExecStart=/opt/comfyfleet/bin/comfyfleet agent",
    }


def test_a_line_break_in_a_path_is_refused() -> None:
    with pytest.raises(DeployError, match="control character"):
        render("systemd", Deployment(settings(workspace="/srv/a\nExecStartPre=/bin/evil")))
