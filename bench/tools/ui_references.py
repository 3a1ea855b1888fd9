"""Make the reference fixtures for the UI-to-API workflow conversion, with ComfyUI's own editor.

Run once by hand (not by CI; CI only reads what it wrote), again only when the cached ComfyUI,
its frontend or its workflow templates change version:

    python bench/tools/ui_references.py            # all templates + the editor's default
    python bench/tools/ui_references.py --only default_workflow,image_qwen_image

It starts one CPU instance of the test suite's cached ComfyUI exactly as the fleet would
(`comfy_argv`), opens the editor that this ComfyUI serves in headless Chromium (Debian's
`/usr/bin/chromium`), and for every workflow of the `comfyui_workflow_templates` package
installed in its venv, for the editor's default workflow (as the editor saves it) and for the
cases that `ui_reference_cases.js` builds in the editor (a legacy group node through the editor's
own command and dialog): loads the file with `app.loadGraphData` and records
`(await app.graphToPrompt()).output`, the graph the editor's Run button would queue.
`Math.random` is pinned to 0 first, so a `{a|b}` prompt takes its first option. Kept: the
workflows whose node types this instance has (the editor's own frontend-only nodes aside) and
that the editor converts. Written to `tests/ui_workflows/`:

    references.json.gz   {"versions", "random", "editor_titles",
                          "workflows": {name: {"workflow", "output", "random"}},
                          "skipped": {name: reason}}
    object_info.json.gz  the instance's /object_info (what the conversion reads)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, sync_playwright  # noqa: E402
from tests.comfyui_env import free_port_block, installed_workspace, workspace_sharing  # noqa: E402
from tests.integration.browser import CHROMIUM, FLAGS  # noqa: E402

from comfyfleet.config import load_settings  # noqa: E402
from comfyfleet.gpus import detect_platform, plan_instances  # noqa: E402
from comfyfleet.supervise._command import comfy_argv, instance_specs  # noqa: E402
from comfyfleet.workspace import Workspace, write_extra_model_paths  # noqa: E402

OUT = ROOT / "tests" / "ui_workflows"
FRONTEND_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
"""Node types the editor defines itself: they never reach the server."""

LIST_TEMPLATES = """
import json, importlib.metadata as md, comfyui_workflow_templates as t
found = {}
for entry in t.iter_templates():
    for asset in entry.assets:
        if asset.filename == entry.template_id + ".json":
            found[entry.template_id] = t.get_asset_path(entry.template_id, asset.filename)
versions = {p: md.version(p) for p in
            ("comfyui-frontend-package", "comfyui-workflow-templates")}
print(json.dumps({"templates": found, "versions": versions}))
"""

PIN_RANDOM = "() => { Math.random = () => 0; }"
"""Dynamic prompts draw with Math.random: pinned, every `{a|b}` takes its first option."""

CONVERT = """async (wf) => {
    await window.app.loadGraphData(wf, true, true, null,
        {showMissingNodesDialog: false, showMissingModelsDialog: false});
    const first = JSON.stringify((await window.app.graphToPrompt()).output);
    const second = JSON.stringify((await window.app.graphToPrompt()).output);
    return [JSON.parse(first), first === second];
}"""

DEFAULT = """async () => {
    await window.app.loadGraphData(undefined, true, true, null,
        {showMissingNodesDialog: false, showMissingModelsDialog: false});
    return JSON.parse(JSON.stringify(window.app.graph.serialize()));
}"""

BUILD_CASE = """async (name) => {
    await window.__uiReferenceCases[name]();
    return JSON.parse(JSON.stringify(window.app.graph.serialize()));
}"""

TITLES = """() => Object.fromEntries(Object.entries(window.LiteGraph.registered_node_types)
    .map(([type, node]) => [type, node.title]))"""
CASES = Path(__file__).with_name("ui_reference_cases.js")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return json.load(answer)


def _post(url: str, body: Any) -> None:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30):
        pass


def start_instance(ws_root: Path) -> tuple[subprocess.Popen[bytes], str]:
    settings = load_settings({"workspace": ws_root})
    workspace = Workspace.from_settings(settings)
    plan = plan_instances(detect_platform(), instances=1)[0]
    workspace.prepare()
    write_extra_model_paths(
        workspace.extra_model_paths,
        workspace.models_dir,
        workspace.custom_nodes_dir,
        workspace.model_folders,
    )
    instance_specs(workspace, settings.fleet, [plan])
    port = free_port_block(1)
    argv = comfy_argv(workspace, settings.fleet, plan, port)
    log = (ws_root / "instance.log").open("ab")
    proc = subprocess.Popen(
        argv,
        cwd=workspace.comfyui_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **plan.env},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            _get(url + "/system_stats")
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log_text = (ws_root / "instance.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"ComfyUI did not start:\n{log_text}") from None
            time.sleep(0.2)


def workflow_types(workflow: dict[str, Any]) -> set[str]:
    """Every node type a UI workflow names, subgraph definitions included (their own ids aside)."""
    subgraphs = (workflow.get("definitions") or {}).get("subgraphs") or []
    own = {s.get("id") for s in subgraphs}
    types = {n.get("type") for n in workflow.get("nodes", [])}
    for subgraph in subgraphs:
        types |= {n.get("type") for n in subgraph.get("nodes", [])}
    groups = (workflow.get("extra") or {}).get("groupNodes") or {}
    for name, group in groups.items():
        own |= {f"workflow>{name}", f"workflow/{name}"}
        types |= {n.get("type") for n in group.get("nodes", [])}
    return {t for t in types if t not in own}


def open_editor(page: Page, url: str) -> None:
    page.goto(url + "/")
    page.wait_for_function(
        "() => window.app && window.app.graph && window.app.graph.nodes.length > 0",
        timeout=120_000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, help="default: the tests' cached install")
    parser.add_argument("--only", help="comma-separated workflow names (a trial run)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    installed = args.workspace or installed_workspace()
    python = installed / "venv" / "bin" / "python"
    listing = json.loads(
        subprocess.run([python, "-c", LIST_TEMPLATES], check=True, capture_output=True).stdout
    )
    files: dict[str, Any] = {}
    for name, path in sorted(listing["templates"].items()):
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if isinstance(data, dict) and "nodes" in data:  # not the gallery's index files
            files[name] = data
    only = set(args.only.split(",")) if args.only else None

    with tempfile.TemporaryDirectory(prefix="ui-references-") as scratch:
        ws_root = workspace_sharing(installed, Path(scratch) / "ws")
        proc, url = start_instance(ws_root)
        try:
            # A returning user's editor: no template gallery over the canvas.
            _post(url + "/api/settings/Comfy.TutorialCompleted", True)
            info = _get(url + "/object_info")
            known = set(info) | FRONTEND_ONLY
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                open_editor(page, url)
                version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
                page.evaluate(PIN_RANDOM)
                titles = _differing_titles(page.evaluate(TITLES), info)
                made = {"default_workflow": page.evaluate(DEFAULT)}
                page.evaluate(CASES.read_text(encoding="utf-8"))
                for case in page.evaluate("() => Object.keys(window.__uiReferenceCases)"):
                    if case == "group_node_parts":
                        made["case:group_node"] = _group_node(page)
                    elif case != "group_node_more":
                        made["case:" + case] = page.evaluate(BUILD_CASE, case)
                files = {**made, **files}
                kept, skipped = _convert_all(page, files, known, only)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(60)

    versions = {**listing["versions"], "frontend (window)": version}
    references = {
        "versions": versions,
        "random": "Math.random pinned to 0: each {a|b} of a dynamic prompt takes its first option",
        "editor_titles": titles,
        "workflows": kept,
        "skipped": skipped,
    }
    _write(args.out / "references.json.gz", references)
    _write(args.out / "object_info.json.gz", info)
    print(f"{len(files)} workflows, {len(kept)} kept, {len(skipped)} skipped; versions {versions}")
    for name, reason in sorted(skipped.items()):
        print(f"  skipped {name}: {reason}")


def _group_node(page: Page) -> Any:
    """Nodes made into a legacy group node with the editor's own command and name dialog."""
    page.evaluate("async () => { await window.__uiReferenceCases.group_node_parts(); }")
    page.evaluate(
        "() => { window.__grouping = window.app.extensionManager.command"
        ".execute('Comfy.GroupNode.ConvertSelectedNodesToGroupNode'); }"
    )
    name = page.locator(".p-dialog input").first
    name.fill("sampler_block")
    name.press("Enter")
    page.evaluate("async () => { await window.__grouping; }")
    page.wait_for_function(
        "() => window.app.graph.nodes.some(n => n.type === 'workflow>sampler_block')"
    )
    page.evaluate("async () => { await window.__uiReferenceCases.group_node_more(); }")
    return page.evaluate("() => JSON.parse(JSON.stringify(window.app.graph.serialize()))")


def _convert_all(
    page: Page, files: dict[str, Any], known: set[str], only: set[str] | None
) -> tuple[dict[str, Any], dict[str, str]]:
    kept: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, workflow in files.items():
        if only is not None and name not in only:
            continue
        missing = sorted(workflow_types(workflow) - known)
        if missing:
            skipped[name] = "node types the instance lacks: " + ", ".join(missing)
            continue
        try:
            output, stable = page.evaluate(CONVERT, workflow)
        except Exception as exc:  # the editor refused it: recorded, not kept
            skipped[name] = f"the editor failed: {str(exc).splitlines()[0][:300]}"
            continue
        kept[name] = {"workflow": workflow, "output": output, "random": not stable}
        print(f"{name}: {len(output)} nodes{'' if stable else ' (random)'}", flush=True)
    return kept, skipped


def _differing_titles(titles: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The editor's default node titles where they differ from the server's display names (its
    own English names for some node types): what `_meta.title` shows for an untitled node."""
    differing = {}
    for name, title in titles.items():
        spec = info.get(name)
        if spec is not None and title != (spec.get("display_name") or name):
            differing[name] = title
    return differing


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Key order is kept: the editor reads a node definition's inputs in the server's order.
    raw = json.dumps(data, separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))


if __name__ == "__main__":
    main()
