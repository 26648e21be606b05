"""The edge cache: its config (refused with the fix), and the rendered HAProxy rules."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from skylift.config import ConfigError, load_config
from skylift.edge.cache import CACHE_NAME, EdgeCache
from skylift.edge.render import render_edge
from skylift.edge.spec import EdgeSpec
from skylift.regions.config import edge_spec
from tests.unit.edge.test_render import spec

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "regions.yaml"
CACHE = EdgeCache(paths=("/static/", "/favicon.ico"), max_age=30, bypass_cookies=("sid",))


def eu_spec(**changes: Any) -> EdgeSpec:
    """The same edge as ``spec()`` but for eu-west."""
    peers = {"us": "10.0.0.1:8443", "eu-central": "10.0.0.3:8443", "asia": "10.0.0.4:8443"}
    return spec(region="eu-west", peers=peers, **changes)


def frontend(config: str) -> list[str]:
    return config.split("\nfrontend fe_edge\n", 1)[1].split("\n\n", 1)[0].splitlines()


def test_without_cache_nothing_is_rendered() -> None:
    config = render_edge(spec()).config
    assert f"cache {CACHE_NAME}" not in config and "cache-use" not in config
    assert "cache-store" not in config and "X-Skylift-Cache" not in config


def test_cache_section_and_declared_paths_only() -> None:
    config = render_edge(spec(cache=CACHE)).config
    section = config.split(f"\ncache {CACHE_NAME}\n", 1)[1].split("\n\n", 1)[0].split("\n")
    assert [s.strip() for s in section] == [
        "total-max-size 16",
        "max-age 30",
        "process-vary off",
    ]
    lines = frontend(config)
    assert "    acl cache_path path -m str /favicon.ico" in lines
    assert "    acl cache_path path_beg /static/" in lines
    mark = next(i for i, line in enumerate(lines) if "set-var(txn.cache)" in line)
    # only a GET for a declared path, never a hop, a user's request or another region's user
    assert lines[mark] == (
        "    http-request set-var(txn.cache) bool(true) if !pt METH_GET cache_path !cache_odd "
        "!cache_user "
        "{ var(txn.home) -m str us }"
    )
    assert (
        lines[mark + 1]
        == f"    http-request cache-use {CACHE_NAME} if {{ var(txn.cache) -m bool }}"
    )
    # after every routing rule (txn.home is final) and before the backend is chosen
    last_routing = max(i for i, line in enumerate(lines) if "set-header X-Skylift-Hop" in line)
    first_backend = min(i for i, line in enumerate(lines) if "use_backend" in line)
    assert last_routing < mark < first_backend


def test_authorization_and_bypass_cookies_never_cached() -> None:
    lines = frontend(render_edge(spec(cache=CACHE)).config)
    assert "    acl cache_user req.hdr(Authorization) -m found" in lines
    assert "    acl cache_user req.cook(sid) -m found" in lines


def test_store_only_own_region_without_set_cookie_or_failover() -> None:
    lines = frontend(render_edge(eu_spec(cache=CACHE)).config)
    store = [line for line in lines if "cache-store" in line]
    assert store == [
        f"    http-response cache-store {CACHE_NAME} if {{ var(txn.cache) -m bool }} "
        "{ srv_name -m str eu-west } !{ var(txn.route) -m str failover } "
        "!{ res.hdr(Set-Cookie) -m found }"
    ]
    assert any("X-Skylift-Cache hit if { res.cache_hit }" in line for line in lines)


def test_same_rules_in_every_region_but_the_region_name() -> None:
    us = frontend(render_edge(spec(cache=CACHE)).config)
    eu = frontend(render_edge(eu_spec(cache=CACHE)).config)
    pick = [i for i, line in enumerate(us) if "cache" in line.lower()]
    assert len(pick) == 11
    assert [us[i].replace("str us ", "str R ") for i in pick] == [
        eu[i].replace("str eu-west ", "str R ") for i in pick
    ]


def test_cache_config_change_means_a_reload() -> None:
    """A reload is what purges the 2.6 cache: turning it on, or changing it, reloads."""
    off = render_edge(spec())
    on = render_edge(spec(cache=CACHE))
    longer = render_edge(spec(cache=replace(CACHE, max_age=120)))
    assert len({off.reload_fingerprint, on.reload_fingerprint, longer.reload_fingerprint}) == 3


@pytest.mark.parametrize(
    "bad",
    [
        EdgeCache(paths=()),
        EdgeCache(paths=("/",)),
        EdgeCache(paths=("/a b",)),
        EdgeCache(paths=("/x' }",)),
        EdgeCache(paths=("/_skylift/region-health",)),
        EdgeCache(paths=("/s/",), bypass_cookies=("a;b",)),
        EdgeCache(paths=("/s/",), total_max_size=1, max_object_size=1 << 20),
    ],
)
def test_spec_that_would_inject_or_break_is_refused(bad: EdgeCache) -> None:
    with pytest.raises(ValueError, match="edge cache"):
        render_edge(spec(cache=bad))


def _with_cache(tmp_path: Path, cache: Any) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    data.setdefault("edge", {})["cache"] = cache
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_config_reaches_every_region_edge(tmp_path: Path) -> None:
    path = _with_cache(tmp_path, {"paths": ["/static/"], "max_age": 45, "bypass_cookies": ["sid"]})
    config = load_config(path).config
    specs = [edge_spec(config, name, tmp_path) for name in config.edged_regions]
    assert {s.cache for s in specs} == {
        EdgeCache(paths=("/static/",), max_age=45, bypass_cookies=("sid",))
    }
    assert edge_spec(load_config(EXAMPLE).config, "us", EXAMPLE.parent).cache is None  # off


@pytest.mark.parametrize(
    ("cache", "fix"),
    [
        ({"paths": ["/"]}, "every path public"),
        ({"paths": ["/static dir/"]}, "write an absolute path"),
        ({"paths": ["/_skylift/x"]}, "never cached"),
        ({"paths": []}, "at least 1"),
        (
            {"paths": ["/s/"], "total_max_size": 1, "max_object_size": 600000},
            "raise total_max_size",
        ),
        ({"paths": ["/s/"], "bypass_cookies": ["a b"]}, "cookie name"),
        ({"paths": ["/s/"], "bypass_cookies": ["a#b"]}, "cookie name"),
        ({"paths": ["/s/${HOME}/"]}, "write an absolute path"),
    ],
)
def test_invalid_cache_config_names_field_and_fix(tmp_path: Path, cache: Any, fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_with_cache(tmp_path, cache))
    text = str(info.value)
    assert "edge.cache" in text and fix in text
