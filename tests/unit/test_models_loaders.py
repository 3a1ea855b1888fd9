"""required_models: which loader inputs name files, from the one table."""

from __future__ import annotations

from comfyfleet.models import LOADER_INPUTS, required_models

WORKFLOW = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
    "5": {"class_type": "LoraLoader", "inputs": {"lora_name": "x.safetensors", "model": ["4", 0]}},
    "6": {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}},
    "7": {
        "class_type": "DualCLIPLoader",
        "inputs": {"clip_name1": "a.safetensors", "clip_name2": "https://h.test/b.safetensors"},
    },
    "8": {"class_type": "KSampler", "inputs": {"model": ["5", 0]}},
    "9": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": ["1", 0]}},
}


def test_loader_inputs_are_found_with_their_folder_types() -> None:
    needs = required_models(WORKFLOW)
    assert [(n.node_id, n.input_name, n.folder_type, n.value) for n in needs] == [
        ("4", "ckpt_name", "checkpoints", "sd15.safetensors"),
        ("5", "lora_name", "loras", "x.safetensors"),
        ("7", "clip_name1", "text_encoders", "a.safetensors"),
        ("7", "clip_name2", "text_encoders", "https://h.test/b.safetensors"),
    ]
    assert needs[-1].is_url and not needs[0].is_url


def test_the_table_covers_the_core_loaders() -> None:
    for name in (
        "CheckpointLoader",
        "UNETLoader",
        "CLIPLoader",
        "TripleCLIPLoader",
        "ControlNetLoader",
        "DiffControlNetLoader",
        "CLIPVisionLoader",
        "StyleModelLoader",
        "GLIGENLoader",
        "HypernetworkLoader",
        "unCLIPCheckpointLoader",
        "ImageOnlyCheckpointLoader",
        "LoraLoaderModelOnly",
    ):
        assert name in LOADER_INPUTS
