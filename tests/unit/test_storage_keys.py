from __future__ import annotations

import pytest

from comfyfleet.storage import InvalidKey, StorageError, check_key
from comfyfleet.storage._keys import check_prefix, quote_key


@pytest.mark.parametrize(
    "key",
    [
        "a.png",
        "job-1/ComfyUI_00001_.png",
        "job 1/sub dir/vidéo.mp4",
        "a/b/c/d/e.f",
        "..hidden/x",
        "x..y",
    ],
)
def test_plain_relative_paths_are_accepted(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("../etc/passwd", "'..'"),
        ("job/../../x", "'..'"),
        ("job/..", "'..'"),
        ("/etc/passwd", "starts with '/'"),
        ("job\\x.png", "backslash"),
        ("..\\x", "backslash"),
        ("job/x\x00.png", "NUL"),
        ("job//x.png", "empty or '.'"),
        ("job/./x.png", "empty or '.'"),
        ("job/", "empty or '.'"),
        ("job/x\n.png", "control character"),
        ("k" * 1025, "longer than 1024 bytes"),
    ],
)
def test_unsafe_keys_are_refused_with_the_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        check_key(key)
    assert reason in str(caught.value)
    assert isinstance(caught.value, StorageError)
    assert caught.value.hint is not None


def test_prefixes_are_normalised_and_checked() -> None:
    assert check_prefix("") == ""
    assert check_prefix("/") == ""
    assert check_prefix("outputs") == "outputs/"
    assert check_prefix("/a/b/") == "a/b/"
    with pytest.raises(InvalidKey):
        check_prefix("a/../b")


def test_keys_are_escaped_per_segment_in_urls() -> None:
    assert quote_key("job 1/a#b?.png") == "job%201/a%23b%3F.png"
