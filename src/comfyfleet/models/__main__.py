"""`python -m comfyfleet.models download SOURCE DEST`: the downloader alone, without a workspace.

Plumbing for scripts and for the tests that kill a download mid-file and run it again; users
want `comfyfleet models install`. Settings come as `--set name=value` (ModelSettings fields).
Exit status: 0 done, 1 failed (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from comfyfleet.errors import ComfyfleetError
from comfyfleet.models._downloader import Downloader, DownloadItem
from comfyfleet.models._progress import DownloadProgress
from comfyfleet.models._settings import ModelSettings


def _settings(pairs: list[str]) -> ModelSettings:
    values: dict[str, Any] = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        try:
            values[name] = json.loads(raw)
        except ValueError:
            values[name] = raw
    return ModelSettings(**values)


def _print(progress: DownloadProgress) -> None:
    print(json.dumps(progress.to_dict()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyfleet.models")
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="fetch one source to a path")
    download.add_argument("source")
    download.add_argument("dest", type=Path)
    download.add_argument("--sha256")
    download.add_argument("--size", type=int)
    download.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    download.add_argument("--progress", action="store_true", help="print progress as JSON lines")
    args = parser.parse_args(argv)
    downloader = Downloader(_settings(args.set))
    item = DownloadItem(args.source, args.dest, args.size, args.sha256)
    try:
        result = asyncio.run(downloader.download(item, _print if args.progress else None))
    except ComfyfleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    summary = {
        "path": str(result.path),
        "size": result.size,
        "sha256": result.sha256,
        "fetched_bytes": result.fetched_bytes,
        "rehashed_bytes": result.rehashed_bytes,
        "notes": list(result.notes),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
