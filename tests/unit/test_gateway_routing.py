"""What the gateway fixes at submit for routing: the models a job's loaders name (affinity) and
its key's running limit (the key's own, else `serve.max_running_per_key`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyfleet.assets import AssetStore
from comfyfleet.auth import KeyRecord, KeyStore
from comfyfleet.gateway import ServeSettings, Service
from comfyfleet.jobs import MemoryJobStore
from comfyfleet.models import LOADER_INPUTS
from tests.unit.test_gateway_tenancy import Gateway, run

GRAPH = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
    "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "cat.safetensors"}},
    "3": {"class_type": "FleetModelSwitch", "inputs": {"model": "m1"}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
}


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    keys = KeyStore(tmp_path / "keys.json")
    tokens = {
        "limited": keys.create("limited", max_running=1).token,
        "default": keys.create("default").token,
    }
    service = Service(
        store=MemoryJobStore(),
        output_dir=tmp_path / "out",
        settings=ServeSettings(max_running_per_key=4),
        loaders=LOADER_INPUTS | {"FleetModelSwitch": {"model": "checkpoints"}},
    )
    return Gateway(service, AssetStore(tmp_path / "input"), tokens)


def test_a_job_records_the_models_its_loaders_name(gw: Gateway) -> None:
    job_id = gw.submit("default", {"workflow": GRAPH}).json()["id"]
    job = run(gw.service.store.get(job_id))
    assert job.models == (
        "checkpoints/sd15.safetensors",
        "loras/cat.safetensors",
        "checkpoints/m1",
    )


def test_a_job_carries_its_keys_running_limit_or_the_default(gw: Gateway) -> None:
    limited = gw.submit("limited", {"workflow": GRAPH}).json()["id"]
    default = gw.submit("default", {"workflow": GRAPH}).json()["id"]
    assert run(gw.service.store.get(limited)).max_running == 1
    assert run(gw.service.store.get(default)).max_running == 4


def test_a_keys_limit_survives_the_key_file(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    issued = keys.create("k", max_running=3)
    (record,) = KeyStore(tmp_path / "keys.json").records()
    assert isinstance(record, KeyRecord) and record.max_running == 3 == issued.record.max_running
