"""Presets and manifests: the shipped ones load, and bad entries fail at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyfleet.models import (
    Catalog,
    ManifestError,
    ModelSettings,
    PresetNotFound,
    parse_manifest,
    resolve_source,
)

GOOD = """
presets:
  mine:
    description: test
    files:
      - {source: "https://example.invalid/a.safetensors", type: loras, filename: a.safetensors,
         size: 10, sha256: "%s"}
models:
  - {source: "hf://org/repo/sub/b.bin@v1", type: vae, filename: sub/b.bin}
""" % ("AB" * 32)


def test_shipped_presets_have_real_sizes_and_hashes() -> None:
    catalog = Catalog.load()
    assert {"sd15", "sdxl-base", "taesd"} <= set(catalog.presets)
    sd15 = catalog.preset("sd15").files[0]
    assert sd15.size == 4265146304
    assert sd15.sha256 == "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"
    for preset in catalog.presets.values():
        for file in preset.files:
            assert file.sha256 is not None or file.git_blob is not None, file.filename
    taesd = catalog.preset("taesd").files
    assert [f.git_blob for f in taesd if f.filename == "taesd_decoder.pth"] == [
        "5915a429fc08eba4adf62bf74f96705b8b0d5c1f"
    ]


def test_a_manifest_parses_and_lowercases_hashes() -> None:
    manifest = parse_manifest(GOOD, "test.yaml")
    file = manifest.presets[0].files[0]
    assert file.sha256 == "ab" * 32
    catalog = Catalog.from_manifests([manifest])
    assert catalog.find("vae", "sub/b.bin") is not None
    assert catalog.by_source("hf://org/repo/sub/b.bin@v1") is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("type: loras", "type: lorras"), "unknown folder type 'lorras'"),
        (("filename: a.safetensors", "filename: ../a.safetensors"), "without '..'"),
        (("filename: a.safetensors", "filename: /etc/a"), "relative path"),
        (('sha256: "', 'sha256: "zz'), "64 hexadecimal"),
        (("https://example.invalid/a.safetensors", "ftp://x/a"), "unknown scheme"),
        (("hf://org/repo/sub/b.bin@v1", "hf://org/b.bin"), "hf://ORG/REPO/PATH"),
        (("filename: sub/b.bin", "filename: sub/b.bin, git_blob: abc"), "40 hexadecimal"),
        (("hf://org/repo/sub/b.bin@v1", "az://container-only"), "az://CONTAINER/KEY"),
    ],
)
def test_bad_entries_fail_at_load_naming_the_place(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(GOOD.replace(*change), "bad.yaml")
    assert message in caught.value.message
    assert caught.value.message.startswith("bad.yaml: ")


def test_unknown_preset_lists_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD)
    catalog = Catalog.load([path], shipped=False)
    with pytest.raises(PresetNotFound, match=r"known: mine"):
        catalog.preset("nope")


def test_sources_resolve_with_tokens_and_bases() -> None:
    settings = ModelSettings(huggingface_url="http://hub.test", civitai_url="http://civ.test/")
    hf = resolve_source("hf://org/repo/dir/f.bin@rev1", settings, {"HF_TOKEN": "t"})
    assert hf.url == "http://hub.test/org/repo/resolve/rev1/dir/f.bin"
    assert hf.headers == {"Authorization": "Bearer t"} and hf.token_env == "HF_TOKEN"
    civ = resolve_source("civitai://123", settings, {})
    assert civ.url == "http://civ.test/api/download/models/123" and not civ.headers
    assert resolve_source("/x/y.bin", settings).kind == "stream"
