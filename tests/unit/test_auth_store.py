"""The key store: keys created, verified, revoked and expired; the file it keeps them in."""

from __future__ import annotations

import hmac
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from comfyfleet.auth import (
    ADMIN,
    READ,
    STATIC_KEY_ID,
    SUBMIT,
    AuthError,
    AuthSettings,
    KeyNotFound,
    KeyStore,
    KeyStoreError,
    keys_file_path,
    open_key_store,
    parse_scopes,
)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> KeyStore:
    return KeyStore(tmp_path / "state" / "api_keys.json", clock=clock)


# --- keys ---------------------------------------------------------------------------------------


def test_a_created_key_verifies_and_names_its_record(store: KeyStore) -> None:
    issued = store.create("ci-pipeline")
    record = store.verify(issued.token)
    assert record is not None
    assert (record.id, record.name) == (issued.record.id, "ci-pipeline")
    assert issued.token.startswith(f"cf_{record.id}_")
    assert len(record.id) == 8
    assert len(issued.token) >= len("cf_12345678_") + 43  # 32 random bytes, base64
    assert record.hint == issued.token[-4:]


def test_keys_are_random_and_do_not_open_each_other(store: KeyStore) -> None:
    first, second = store.create("a"), store.create("b")
    assert first.token != second.token and first.record.id != second.record.id
    assert store.verify(first.token) == first.record
    assert store.verify(second.token) == second.record


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret
        lambda t: t[:-10],  # truncated
        lambda t: "cf_zzzzzzzz_" + t.split("_", 2)[2],  # unknown id, right secret
        lambda t: t.upper(),
        lambda t: "",
        lambda t: "Bearer " + t,
        lambda t: t + "\n",
    ],
)
def test_anything_but_the_exact_key_is_refused(
    store: KeyStore, mangle: Callable[[str], str]
) -> None:
    issued = store.create("a")
    assert store.verify(mangle(issued.token)) is None


def test_revoked_keys_are_refused_and_stay_listed(store: KeyStore, clock: Clock) -> None:
    issued = store.create("laptop")
    clock.now += 5
    revoked = store.revoke(issued.record.id)
    assert revoked.revoked and revoked.revoked_at == clock.now
    assert store.verify(issued.token) is None
    assert store.get(issued.record.id).status(clock.now) == "revoked"
    assert store.revoke(issued.record.id) == revoked  # again: nothing changes


def test_revoking_an_unknown_id_says_how_to_find_ids(store: KeyStore) -> None:
    with pytest.raises(KeyNotFound, match="no API key with id 'nope'") as caught:
        store.revoke("nope")
    assert "keys list" in (caught.value.hint or "")


def test_keys_expire(store: KeyStore, clock: Clock) -> None:
    issued = store.create("temp", expires_in_s=60)
    assert issued.record.expires_at == clock.now + 60
    clock.now += 59
    assert store.verify(issued.token) is not None
    clock.now += 1
    assert store.verify(issued.token) is None
    assert store.get(issued.record.id).status(clock.now) == "expired"


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\there"])
def test_bad_names_are_refused(store: KeyStore, name: str) -> None:
    with pytest.raises(AuthError, match="a key name must be"):
        store.create(name)


@pytest.mark.parametrize("seconds", [0, -1])
def test_a_lifetime_must_be_positive(store: KeyStore, seconds: float) -> None:
    with pytest.raises(AuthError, match="lifetime must be positive"):
        store.create("x", expires_in_s=seconds)


# --- scopes -------------------------------------------------------------------------------------


def test_a_key_made_without_scopes_may_submit_and_read_but_not_administer(
    store: KeyStore,
) -> None:
    record = store.verify(store.create("app").token)
    assert record is not None
    assert record.scopes == {SUBMIT, READ}
    assert (record.allows(SUBMIT), record.allows(READ), record.allows(ADMIN)) == (True, True, False)


def test_scopes_are_kept_in_the_file_and_shown(store: KeyStore) -> None:
    reader = store.create("dashboard", scopes=frozenset({READ}))
    admin = store.create("ops", scopes=frozenset({ADMIN}))
    again = KeyStore(store.path)  # a fresh reader of the same file
    read_only, operator = again.verify(reader.token), again.verify(admin.token)
    assert read_only is not None and operator is not None
    assert read_only.scopes == {READ} and not read_only.allows(SUBMIT)
    assert all(operator.allows(scope) for scope in (SUBMIT, READ, ADMIN))
    entries = json.loads(store.path.read_text())["keys"]
    assert [entry["scopes"] for entry in entries] == [["read"], ["admin"]]
    assert read_only.public_view(0.0)["scopes"] == ["read"]


def test_a_key_file_from_before_scopes_gives_its_keys_submit_and_read(store: KeyStore) -> None:
    issued = store.create("old")
    data = json.loads(store.path.read_text())
    for entry in data["keys"]:
        del entry["scopes"]
    store.path.write_text(json.dumps(data))
    record = KeyStore(store.path).verify(issued.token)
    assert record is not None and record.scopes == {SUBMIT, READ}


def test_an_unknown_scope_in_the_file_is_named(store: KeyStore) -> None:
    store.create("a")
    data = json.loads(store.path.read_text())
    data["keys"][0]["scopes"] = ["read", "root"]
    store.path.write_text(json.dumps(data))
    with pytest.raises(KeyStoreError, match=r"entry 0 of .*unknown scope 'root'"):
        KeyStore(store.path).records()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["submit"], {SUBMIT}),
        (["submit,read"], {SUBMIT, READ}),
        (["read", " ADMIN "], {READ, ADMIN}),
    ],
)
def test_scopes_come_repeated_or_as_a_comma_list(values: list[str], expected: set[str]) -> None:
    assert parse_scopes(values) == expected


@pytest.mark.parametrize(
    ("values", "message"), [(["write"], "unknown scope 'write'"), ([","], "at least one scope")]
)
def test_bad_scopes_are_refused(values: list[str], message: str) -> None:
    with pytest.raises(AuthError, match=message):
        parse_scopes(values)


# --- the file -----------------------------------------------------------------------------------


def test_the_file_is_private_and_holds_no_key(store: KeyStore) -> None:
    issued = store.create("a")
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert mode == 0o600
    text = store.path.read_text()
    assert issued.token not in text
    assert issued.token.split("_", 2)[2] not in text  # nor its secret part
    [entry] = json.loads(text)["keys"]
    assert entry["id"] == issued.record.id and entry["name"] == "a"
    assert len(bytes.fromhex(entry["sha256"])) == 32
    assert entry["revoked"] is False and entry["hint"] == issued.token[-4:]


def test_the_file_stays_private_after_changes(store: KeyStore) -> None:
    issued = store.create("a")
    os.chmod(store.path, 0o644)
    store.revoke(issued.record.id)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert not list(store.path.parent.glob(".api_keys.json.*.tmp"))


def test_a_key_written_by_another_store_works_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    server = KeyStore(path)
    assert server.verify("cf_abcdefgh_" + "x" * 43) is None  # loaded: no file yet
    cli = KeyStore(path)
    issued = cli.create("new")
    assert server.verify(issued.token) is not None
    cli.revoke(issued.record.id)
    assert server.verify(issued.token) is None


def test_two_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    a, b = KeyStore(path), KeyStore(path)
    first = a.create("first")  # b never read the file: it must not overwrite a's key
    second = b.create("second")
    reader = KeyStore(path)
    assert {r.id for r in reader.records()} == {first.record.id, second.record.id}


def test_records_lists_every_key_oldest_first(store: KeyStore, clock: Clock) -> None:
    ids = []
    for name in ("one", "two", "three"):
        ids.append(store.create(name).record.id)
        clock.now += 1
    store.revoke(ids[1])
    assert [r.id for r in store.records()] == ids
    assert "digest" not in repr(store.records()[0])


def test_a_corrupt_file_fails_closed_with_its_path(store: KeyStore) -> None:
    issued = store.create("a")
    store.path.write_text("{not json")
    with pytest.raises(KeyStoreError, match="is not JSON") as caught:
        store.verify(issued.token)
    assert str(store.path) in caught.value.message


def test_a_bad_entry_is_named(store: KeyStore) -> None:
    store.path.parent.mkdir(parents=True)
    store.path.write_text(json.dumps({"version": 1, "keys": [{"id": "x", "name": "y"}]}))
    with pytest.raises(KeyStoreError, match=r"entry 0 of .* is not a valid key entry"):
        store.records()


# --- no timing oracle ---------------------------------------------------------------------------


def _comparisons(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def test_unknown_ids_take_the_same_comparison_as_known_ones(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = store.create("a")
    secret = issued.token.split("_", 2)[2]
    calls = _comparisons(monkeypatch)
    tokens = {
        "valid": issued.token,
        "wrong secret": issued.token[:-4] + "AAAA",
        "unknown id": f"cf_zzzzzzzz_{secret}",
        "malformed": "hello",
    }
    for what, token in tokens.items():
        calls.clear()
        store.verify(token)
        assert len(calls) == 1, what
        presented, against = calls[0]
        assert len(presented) == len(against) == 32, what  # digests, never the raw text


# --- settings and the static key ----------------------------------------------------------------


def test_defaults_keep_auth_off_and_health_public(tmp_path: Path) -> None:
    settings = AuthSettings()
    assert not settings.enabled and settings.public_paths == ("/health", "/api/v2/health")
    assert keys_file_path(settings, tmp_path) == tmp_path / "api_keys.json"
    other = AuthSettings(keys_file=tmp_path / "k.json")
    assert keys_file_path(other, tmp_path / "state") == tmp_path / "k.json"


def test_a_static_key_verifies_but_is_not_stored(tmp_path: Path) -> None:
    key = "s" * 40
    settings = AuthSettings(api_key=SecretStr(key + "\n"))
    store = open_key_store(settings, tmp_path)
    assert store.has_static_key
    record = store.verify(key)
    assert record is not None and record.id == STATIC_KEY_ID
    assert record.scopes == {ADMIN}  # the operator's key, set where the server is configured
    assert store.verify(key[:-1]) is None
    issued = store.create("file key")
    assert store.verify(issued.token) is not None  # the file's keys work beside it
    assert key not in store.path.read_text()
    assert key not in repr(settings)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("api_key", "short", "at least 32 characters"),
        ("public_paths", ("health",), "must start with '/'"),
    ],
)
def test_bad_auth_settings_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AuthSettings.model_validate({field: value})
