"""The router fix for editors opened under `/instances/{i}/` (see facades/instances/_subpath)."""

from __future__ import annotations

from comfyfleet.facades.instances import _subpath


def test_only_entry_scripts_fetched_with_get_are_candidates() -> None:
    assert _subpath.may_need_router_base("GET", b"/assets/index-BKdH1OFt.js")
    assert not _subpath.may_need_router_base("HEAD", b"/assets/index-BKdH1OFt.js")
    assert not _subpath.may_need_router_base("GET", b"/assets/GraphView-DVNkY3oT.js")
    assert not _subpath.may_need_router_base("GET", b"/assets/index-x.js/../../secret")


def test_the_router_of_an_affected_release_is_based_on_the_pages_folder() -> None:
    script = b"router=createRouter({history:createWebHistory(basePath)})"
    fixed = _subpath.with_router_base(script)
    assert b"createWebHistory(basePath)" not in fixed
    assert b'createWebHistory(window.location.pathname.replace(/[^/]*$/,""))' in fixed


def test_a_release_without_the_pattern_passes_unchanged() -> None:
    script = b"router=createRouter({history:createWebHistory(getRouterBase())})"
    assert _subpath.with_router_base(script) == script
