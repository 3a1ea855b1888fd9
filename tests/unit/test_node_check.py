"""Reading custom-node import failures from instance logs (the lines ComfyUI prints at start)."""

from __future__ import annotations

from pathlib import Path

from comfyfleet.provision import import_reports, node_imports, parse_import_report

CN = "/srv/ws/custom_nodes"


def start(index: int = 0) -> str:
    return f"2026-01-01 10:00:00 [comfyfleet] instance {index}: started pid 41 on port 8188\n"


def report(*lines: str) -> str:
    return "\nImport times for custom nodes:\n" + "".join(f"{line}\n" for line in lines) + "\n"


FAILED_START = (
    start()
    + "Traceback (most recent call last):\n"
    + f'  File "{CN}/broken-nodes/__init__.py", line 1, in <module>\n'
    + "ModuleNotFoundError: No module named 'nonexistent_dependency'\n"
    + f"Cannot import {CN}/broken-nodes module for custom nodes: "
    + "No module named 'nonexistent_dependency'\n"
    + f"Skip {CN}/empty-nodes module for custom nodes due to the lack of NODE_CLASS_MAPPINGS "
    + "or NODES_LIST (need one).\n"
    + report(
        f"   0.0 seconds (IMPORT FAILED): {CN}/broken-nodes",
        f"   0.0 seconds (IMPORT FAILED): {CN}/empty-nodes",
        f"   0.2 seconds: {CN}/good-nodes",
    )
    + "Starting server\n"
)


def test_failures_and_their_reasons() -> None:
    parsed = parse_import_report(FAILED_START, 3)
    assert parsed is not None and parsed.instance == 3
    assert parsed.modules == {
        "broken-nodes": "No module named 'nonexistent_dependency'",
        "empty-nodes": "due to the lack of NODE_CLASS_MAPPINGS or NODES_LIST (need one).",
        "good-nodes": None,
    }


def test_only_the_newest_start_counts() -> None:
    fixed = start() + report(
        f"   0.0 seconds: {CN}/broken-nodes", f"   0.1 seconds: {CN}/good-nodes"
    )
    parsed = parse_import_report(FAILED_START + fixed)
    assert parsed is not None
    assert parsed.modules == {"broken-nodes": None, "good-nodes": None}


def test_a_reason_from_an_earlier_start_is_not_reused() -> None:
    again = start() + report(f"   0.0 seconds (IMPORT FAILED): {CN}/broken-nodes")
    parsed = parse_import_report(FAILED_START + again)
    assert parsed is not None and parsed.modules == {"broken-nodes": "import failed"}


def test_no_report_yet() -> None:
    assert parse_import_report(start() + "Total VRAM 1 MB\n") is None


def test_per_node_across_instances(tmp_path: Path) -> None:
    (tmp_path / "instance-0.log").write_text(FAILED_START, encoding="utf-8")
    (tmp_path / "instance-1.log").write_text(
        start(1) + report(f"   0.0 seconds: {CN}/broken-nodes", f"   0.1 seconds: {CN}/good-nodes"),
        encoding="utf-8",
    )
    (tmp_path / "instance-2.log").write_text(start(2), encoding="utf-8")  # still starting
    (tmp_path / "supervisor.log").write_text(FAILED_START, encoding="utf-8")  # not an instance
    reports = import_reports(tmp_path)
    assert [r.instance for r in reports] == [0, 1]
    by_name = {n.name: n for n in node_imports(reports)}
    broken = by_name["broken-nodes"]
    assert (broken.ok, broken.failed_on, broken.loaded_on) == (False, (0,), (1,))
    assert broken.reason == "No module named 'nonexistent_dependency'"
    assert by_name["good-nodes"].ok and by_name["good-nodes"].loaded_on == (0, 1)
    assert not by_name["empty-nodes"].ok


def test_a_report_just_before_a_rotation_is_found(tmp_path: Path) -> None:
    (tmp_path / "instance-0.log.1").write_text(FAILED_START, encoding="utf-8")
    (tmp_path / "instance-0.log").write_text("got prompt\n", encoding="utf-8")
    (only,) = import_reports(tmp_path)
    assert only.modules["broken-nodes"] == "No module named 'nonexistent_dependency'"
