"""Which model files a workflow needs: the loader nodes and the inputs that name files.

One table, :data:`LOADER_INPUTS`, maps each loader class to its file inputs and their folder
types; everything else (the dispatcher's fetch-before-run, the gateway's checks) reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyfleet.models._sources import is_url

LOADER_INPUTS: dict[str, dict[str, str]] = {
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"},
    "CheckpointLoader": {"config_name": "configs", "ckpt_name": "checkpoints"},
    "unCLIPCheckpointLoader": {"ckpt_name": "checkpoints"},
    "ImageOnlyCheckpointLoader": {"ckpt_name": "checkpoints"},
    "LoraLoader": {"lora_name": "loras"},
    "LoraLoaderModelOnly": {"lora_name": "loras"},
    "VAELoader": {"vae_name": "vae"},
    "UNETLoader": {"unet_name": "diffusion_models"},
    "CLIPLoader": {"clip_name": "text_encoders"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "TripleCLIPLoader": {
        "clip_name1": "text_encoders",
        "clip_name2": "text_encoders",
        "clip_name3": "text_encoders",
    },
    "QuadrupleCLIPLoader": {
        "clip_name1": "text_encoders",
        "clip_name2": "text_encoders",
        "clip_name3": "text_encoders",
        "clip_name4": "text_encoders",
    },
    "ControlNetLoader": {"control_net_name": "controlnet"},
    "DiffControlNetLoader": {"control_net_name": "controlnet"},
    "UpscaleModelLoader": {"model_name": "upscale_models"},
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "StyleModelLoader": {"style_model_name": "style_models"},
    "GLIGENLoader": {"gligen_name": "gligen"},
    "HypernetworkLoader": {"hypernetwork_name": "hypernetworks"},
    "PhotoMakerLoader": {"photomaker_model_name": "photomaker"},
    "ModelPatchLoader": {"name": "model_patches"},
    "AudioEncoderLoader": {"audio_encoder_name": "audio_encoders"},
    "LatentUpscaleModelLoader": {"model_name": "latent_upscale_models"},
}
"""Loader class -> {input name: folder type}."""

BUILTIN_VALUES: dict[str, frozenset[str]] = {
    "vae": frozenset({"pixel_space", "taesd", "taesdxl", "taesd3", "taef1"}),
}
"""Values of a loader input that ComfyUI resolves itself (not files of that folder type)."""


@dataclass(frozen=True)
class ModelNeed:
    """One file input of one loader node."""

    node_id: str
    class_type: str
    input_name: str
    folder_type: str
    value: str
    """A file name relative to the folder type, or a source URL."""

    @property
    def is_url(self) -> bool:
        return is_url(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "class_type": self.class_type,
            "input": self.input_name,
            "folder_type": self.folder_type,
            "value": self.value,
        }


def required_models(
    workflow: Mapping[str, Any], loaders: Mapping[str, Mapping[str, str]] | None = None
) -> list[ModelNeed]:
    """The model files an API-format workflow's loader nodes name, in node order. Inputs wired
    to other nodes (lists) and ComfyUI's built-in values are left out."""
    table = LOADER_INPUTS if loaders is None else loaders
    needs: list[ModelNeed] = []
    for node_id, node in workflow.items():
        if not isinstance(node, Mapping):
            continue
        class_type = str(node.get("class_type", ""))
        inputs = node.get("inputs")
        file_inputs = table.get(class_type)
        if not file_inputs or not isinstance(inputs, Mapping):
            continue
        for input_name, folder_type in file_inputs.items():
            value = inputs.get(input_name)
            if not isinstance(value, str) or not value.strip():
                continue
            if value in BUILTIN_VALUES.get(folder_type, frozenset()):
                continue
            needs.append(ModelNeed(str(node_id), class_type, input_name, folder_type, value))
    return needs
