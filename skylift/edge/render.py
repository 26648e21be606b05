"""Render a region's edge HAProxy from its :class:`EdgeSpec`: pure, spec in, text out.

The routing order and the failover chains are not decided here: every home
backend is :func:`skylift.regions.rules.failover_chain` written as HAProxy
servers (the chain's first region active, the others ``backup`` in chain
order), and the reason of the documented 503 is :func:`rules.decide`'s own.

Layout of the rendered edge (``fe_edge`` is the only public listener)::

    fe_edge ── trusted hop (peer source + X-Skylift-Hop) ──> be_local (this region's pool)
           ├── /_skylift/region-health ──> be_region_health (the pool's health path)
           └── token > selector > geo > latency > default
                 -> backends.map (whitelist) -> be_home_<home>[__xr__<fallback>]
    be_check_local / be_check_peers: the only health checks; every traffic
    server ``track``s one of them, so each region is checked once per edge.

Map files (live-changeable through the runtime API) carry every value that
can change without a reload: country -> region, extra CIDRs, the latency
choice. Key files (one SPKI PEM per ``kid``) are read only at start, so a
new key means a (hitless) reload.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from skylift.edge.cache import (
    cache_request_lines,
    cache_response_lines,
    cache_section,
    validate_cache,
)
from skylift.edge.spec import EdgeSpec
from skylift.lb.render import (
    POOL_PURGE_DELAY,
    TIMEOUT_HTTP_KEEP_ALIVE,
    TIMEOUT_HTTP_REQUEST,
    haproxy_time,
    socket_dir,
)
from skylift.regions.rules import ROUTES, RequestFacts, decide, failover_chain

#: Path on every edge that answers 200 only while its own region's pool is healthy.
REGION_HEALTH_PATH = "/_skylift/region-health"
SIGNUP_PATH = "/auth/signup"
SELECTOR_COOKIE = "skylift_region"
SELECTOR_HEADER = "X-Skylift-Region"
#: Request headers the edge owns: removed from every request not from a trusted peer.
OWNED_REQUEST_HEADERS = ("X-Skylift-Hop", "X-Skylift-Home", "X-Skylift-Route", "X-Skylift-Country")
FINGERPRINT_PREFIX = "# skylift-edge-structure: "

# Relative names (inside state_dir) of the files the config refers to.
REGIONS_MAP = "maps/regions.map"  # region -> region: the whitelist of names
ZONES_MAP = "maps/zones.map"  # region -> zone
BACKENDS_MAP = "maps/backends.map"  # home or home/fallback -> backend name
COUNTRY_MAP = "maps/country.map"  # country code -> region
EXTRA_GEO_MAP = "maps/extra-geo.map"  # CIDR -> country (config's private networks)
LATENCY_MAP = "maps/latency.map"  # "best" -> region (set live by the prober)
LATENCY_KEY = "best"
ROUTES_MAP = "maps/routes.map"  # route -> route: the whitelist of reasons a peer may send

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_KID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_ADDR_RE = re.compile(r"^\S+:\d{1,5}$")
_CC_RE = re.compile(r"^[A-Za-z]{2}$")


@dataclass(frozen=True, slots=True)
class EdgeFiles:
    """The rendered edge: ``haproxy.cfg`` text and every file it reads.

    ``files`` maps a path relative to ``state_dir`` to its content. ``maps``
    names the ones that may change live (runtime API) without a reload;
    every other file (key PEMs) and the config are read only at (re)load.
    """

    config: str
    files: Mapping[str, str]
    maps: frozenset[str]

    @property
    def reload_fingerprint(self) -> str:
        """Changes exactly when a reload is needed: the config or a non-map file changed."""
        digest = hashlib.sha256(self.config.encode())
        for name in sorted(self.files):
            if name not in self.maps:
                digest.update(f"\0{name}\0{self.files[name]}".encode())
        return digest.hexdigest()[:16]


def key_file(kid: str) -> str:
    """Relative path of ``kid``'s SPKI PEM."""
    return f"keys/{kid}.pem"


def home_backend(home: str, fallback: str | None = None) -> str:
    return f"be_home_{home}" if fallback is None else f"be_home_{home}__xr__{fallback}"


def issuer(region: str) -> str:
    """The ``iss`` of region ``region``'s tokens (as the platform writes it)."""
    return f"skylift-platform/{region}"


def validate_edge_spec(spec: EdgeSpec) -> None:
    """Raise ValueError for anything that would break or inject a config line."""
    names = spec.topology.names
    for name in names:
        if not _NAME_RE.match(name):
            raise ValueError(f"region name {name!r}: letters, digits, '-' and '_' only")
    if spec.region not in spec.topology:
        raise ValueError(f"edge region {spec.region!r} is not in the topology")
    state = str(spec.state_dir)
    if not state.startswith("/") or any(c.isspace() or c in "'\"" for c in state):
        raise ValueError(f"state_dir must be an absolute path without spaces: {state!r}")
    addrs = [spec.listen, spec.local, *spec.peers.values()]
    if spec.metrics_listen:
        addrs.append(spec.metrics_listen)
    for addr in addrs:
        if not _ADDR_RE.match(addr):
            raise ValueError(f"invalid address {addr!r}: write HOST:PORT")
    for peer in spec.topology.names:
        if peer != spec.region and peer not in spec.peers:
            raise ValueError(f"no peer address for region {peer!r}")
    for peer in spec.peers:
        if peer not in spec.topology:
            raise ValueError(f"peer {peer!r} is not a region")
    for ip in spec.trusted_peers:
        if not re.match(r"^[0-9A-Fa-f:.]+(/\d{1,3})?$", ip):
            raise ValueError(f"invalid trusted peer address {ip!r}")
    for kid in spec.token_keys:
        if not _KID_RE.match(kid):
            raise ValueError(f"invalid key id {kid!r}")
    for cidr, cc in spec.extra_countries.items():
        if not re.match(r"^[0-9A-Fa-f:.]+(/\d{1,3})?$", cidr) or not _CC_RE.match(cc):
            raise ValueError(f"invalid extra country entry {cidr!r} -> {cc!r}")
    if spec.geoip_map is not None and (
        not str(spec.geoip_map).startswith("/") or any(c.isspace() for c in str(spec.geoip_map))
    ):
        raise ValueError(f"geoip_map must be an absolute path without spaces: {spec.geoip_map}")
    c = spec.check
    if not c.path.startswith("/") or any(ch.isspace() for ch in c.path):
        raise ValueError(f"invalid health check path {c.path!r}")
    if spec.retry_after < 0:
        raise ValueError("retry_after must be >= 0")
    if spec.cache is not None:
        validate_cache(spec.cache)


def chains(spec: EdgeSpec) -> dict[str, tuple[str, ...]]:
    """Backend name -> its failover chain; pairs whose chain equals the home's share it."""
    topo = spec.topology
    out: dict[str, tuple[str, ...]] = {}
    for home in topo.names:
        out[home_backend(home)] = failover_chain(topo, home)
        for fallback in topo.names:
            chain = failover_chain(topo, home, fallback)
            if chain != out[home_backend(home)]:
                out[home_backend(home, fallback)] = chain
    return out


def backend_keys(spec: EdgeSpec) -> dict[str, str]:
    """``home`` and ``home/fallback`` -> backend: the whitelist ``use_backend`` goes through."""
    topo = spec.topology
    known = chains(spec)
    out: dict[str, str] = {}
    for home in topo.names:
        out[home] = home_backend(home)
        for fallback in topo.names:
            pair = home_backend(home, fallback)
            out[f"{home}/{fallback}"] = pair if pair in known else home_backend(home)
    return out


def _map_text(entries: Mapping[str, str]) -> str:
    return "".join(f"{k} {v}\n" for k, v in entries.items())


def render_maps(spec: EdgeSpec) -> dict[str, str]:
    """Every map file's content (relative path -> text)."""
    topo = spec.topology
    countries: dict[str, str] = {}
    for region in topo.regions:  # first region in config order wins, as in rules
        for cc in sorted(region.countries):
            countries.setdefault(cc.upper(), region.name)
    return {
        REGIONS_MAP: _map_text({n: n for n in topo.names}),
        ZONES_MAP: _map_text({n: topo.zone_of(n) for n in topo.names}),
        BACKENDS_MAP: _map_text(backend_keys(spec)),
        COUNTRY_MAP: _map_text(countries),
        EXTRA_GEO_MAP: _map_text({k: v.upper() for k, v in sorted(spec.extra_countries.items())}),
        ROUTES_MAP: _map_text({r: r for r in ROUTES}),
        LATENCY_MAP: "",  # filled by the prober (set map) and kept by the runner
    }


def render_edge(spec: EdgeSpec) -> EdgeFiles:
    """The complete edge: config text, map files and key files."""
    validate_edge_spec(spec)
    files = render_maps(spec)
    maps = frozenset(files)
    for kid, pem in sorted(spec.token_keys.items()):
        files[key_file(kid)] = pem if pem.endswith("\n") else pem + "\n"
    body = _body(spec)
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    header = (
        f"# Generated by skylift for the edge of region {spec.region}: edits are overwritten.\n"
        f"{FINGERPRINT_PREFIX}{digest}\n"
    )
    return EdgeFiles(header + body, files, maps)


def _p(spec: EdgeSpec, rel: str) -> str:
    return f"{spec.state_dir}/{rel}"


def _json_503(reason: str) -> str:
    """The documented 503 body as an HAProxy log-format string (home and zone from vars)."""
    # json.dumps escapes quotes; the format escapes '%' and the config's quote char.
    text = json.dumps(reason)[1:-1].replace("%", "%%").replace("'", "\\u0027")
    return (
        '{"error":"region_unavailable","home_region":"%[var(txn.home)]",'
        f'"zone":"%[var(txn.zone)]","reason":"{text}"}}'
    )


def _body(spec: EdgeSpec) -> str:
    out: list[str] = []
    out += _global(spec)
    out += _defaults(spec)
    if spec.cache is not None:
        out += cache_section(spec.cache)
    if spec.metrics_listen:
        out += _metrics(spec)
    out += _frontend(spec)
    out += _checks(spec)
    out += _local_backends(spec)
    for name, chain in chains(spec).items():
        out += _home_backend(spec, name, chain)
    return "\n".join(out) + "\n"


def _global(spec: EdgeSpec) -> list[str]:
    d = spec.state_dir
    return [
        "",
        "global",
        "    master-worker",
        f"    pidfile {d}/haproxy.pid",
        # mode 600 in a 0700 dir: the admin socket changes maps; never on a network port.
        f"    stats socket {socket_dir(str(d))}/haproxy.sock mode 600 level admin "
        "expose-fd listeners",
        "    stats timeout 30s",
        f"    server-state-file {d}/server-state",
        "    maxconn 4096",
        f"    hard-stop-after {haproxy_time(30.0 + TIMEOUT_HTTP_KEEP_ALIVE + 5.0)}",
    ]


def _defaults(spec: EdgeSpec) -> list[str]:
    return [
        "",
        "defaults",
        "    mode http",
        "    timeout connect 1s",
        "    timeout client 30s",
        "    timeout server 30s",
        f"    timeout http-request {haproxy_time(TIMEOUT_HTTP_REQUEST)}",
        f"    timeout http-keep-alive {haproxy_time(TIMEOUT_HTTP_KEEP_ALIVE)}",
        "    timeout queue 5s",
        "    load-server-state-from-file global",
        "    option http-keep-alive",
        "    http-reuse safe",
        "    option idle-close-on-response",
        "    option forwardfor",
        # A connection refused or closed without an answer is retried (a server
        # marked down meanwhile sends the retry to the next region of the chain).
        "    retries 2",
        "    retry-on conn-failure empty-response",
        "    option redispatch 1",
        "    option http-buffer-request",  # a request is replayed only if held whole
    ]


def _metrics(spec: EdgeSpec) -> list[str]:
    return [
        "",
        "frontend edge_prometheus",
        f"    bind {spec.metrics_listen}",
        "    http-request set-log-level silent",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    http-request return status 404",
    ]


def _only_routing(line: str) -> str:
    """Make a routing rule skip pass-through requests (trusted hops, region health)."""
    if " if " in line:
        return line.replace(" if ", " if !pt ", 1)
    return f"{line} if !pt"


def _frontend(spec: EdgeSpec) -> list[str]:
    topo = spec.topology

    def p(rel: str) -> str:
        return _p(spec, rel)

    peers = " ".join(sorted(spec.trusted_peers))
    head = [
        "",
        "frontend fe_edge",
        f"    bind {spec.listen}",
        # --- who may speak for an edge: the hop header only from peer sources
        f"    acl from_peer src {peers}" if peers else "    acl from_peer always_false",
        "    acl hop_in req.hdr(X-Skylift-Hop) -m found",
        f"    acl region_health path {REGION_HEALTH_PATH}",
        "    acl pt var(txn.pt) -m found",
        "    acl hop var(txn.hop) -m found",
        "    http-request set-var(txn.hop) bool(true) if from_peer hop_in",
        "    http-request set-var(txn.pt) bool(true) if hop",
        "    http-request set-var(txn.pt) bool(true) if region_health",
    ]
    head += [f"    http-request del-header {h} if !hop" for h in OWNED_REQUEST_HEADERS]
    head += [
        # A trusted hop was decided by the peer edge: keep its (whitelisted) decision.
        f"    http-request set-var(txn.home) req.hdr(X-Skylift-Home),map({p(REGIONS_MAP)}) if hop",
        f"    http-request set-var(txn.route) req.hdr(X-Skylift-Route),map({p(ROUTES_MAP)}) if hop",
        f"    http-request set-var(txn.zone) var(txn.home),map({p(ZONES_MAP)}) if hop",
    ]
    # --- 1. token: ES256 pinned, one verification per known kid, exp, iss
    iss = " ".join(issuer(n) for n in topo.names)
    lines = [
        "    acl has_token http_auth_bearer -m found",
        "    http-request set-var(txn.kid) http_auth_bearer,jwt_header_query('$.kid') if has_token",
        "    http-request set-var(txn.alg) http_auth_bearer,jwt_header_query('$.alg') if has_token",
    ]
    for kid in sorted(spec.token_keys):
        lines.append(
            "    http-request set-var(txn.jwt_ok) "
            f'http_auth_bearer,jwt_verify("ES256","{p(key_file(kid))}") '
            f"if has_token {{ var(txn.kid) -m str -- {kid} }} {{ var(txn.alg) -m str ES256 }}"
        )
    lines += [
        "    acl sig_ok var(txn.jwt_ok) -m int 1",
        "    http-request set-var(txn.now) date() if has_token sig_ok",
        "    http-request set-var(txn.exp) http_auth_bearer,jwt_payload_query('$.exp','int')"
        " if has_token sig_ok",
        "    http-request set-var(txn.iss) http_auth_bearer,jwt_payload_query('$.iss')"
        " if has_token sig_ok",
        "    http-request set-var(txn.tok_home) "
        f"http_auth_bearer,jwt_payload_query('$.home_region'),map({p(REGIONS_MAP)})"
        " if has_token sig_ok",
        "    acl fresh var(txn.exp),sub(txn.now) gt 0",
        f"    acl iss_ok var(txn.iss) -m str {iss}",
        "    acl tok_home var(txn.tok_home) -m found",
        "    http-request set-var(txn.tok) bool(true) if has_token sig_ok fresh iss_ok tok_home",
        "    acl token_ok var(txn.tok) -m found",
        # Forged, expired, foreign or unreadable: refused, never treated as anonymous.
        "    http-request return status 401 content-type application/json "
        """string '{"error":"invalid_token"}' """
        """hdr WWW-Authenticate 'Bearer error="invalid_token"' """
        "if has_token !token_ok",
        "    http-request set-var(txn.xr) "
        f"http_auth_bearer,jwt_payload_query('$.xr'),map({p(REGIONS_MAP)}) if token_ok",
        "    http-request set-var(txn.home) var(txn.tok_home) if token_ok",
        "    http-request set-var(txn.route) str(token) if token_ok",
        # --- 2. selector: header, then cookie, whitelisted
        "    acl decided var(txn.home) -m found",
        f"    http-request set-var(txn.sel) req.hdr({SELECTOR_HEADER}),lower,map({p(REGIONS_MAP)})"
        " if !decided",
        f"    http-request set-var(txn.sel) req.cook({SELECTOR_COOKIE}),lower,"
        f"map({p(REGIONS_MAP)}) if !decided !{{ var(txn.sel) -m found }}",
        "    http-request set-var(txn.route) str(selector) if !decided { var(txn.sel) -m found }",
        "    http-request set-var(txn.home) var(txn.sel) if !decided { var(txn.sel) -m found }",
        # --- 3. country: extra CIDRs first, then the offline geoip map
        f"    http-request set-var(txn.country) src,map_ip({p(EXTRA_GEO_MAP)})",
    ]
    if spec.geoip_map is not None:
        lines.append(
            f"    http-request set-var(txn.country) src,map_ip({spec.geoip_map}) "
            "if !{ var(txn.country) -m found }"
        )
    lines += [
        "    http-request set-var(txn.geo) var(txn.country),upper,"
        f"map({p(COUNTRY_MAP)}) if !decided",
        "    http-request set-var(txn.route) str(geo) if !decided { var(txn.geo) -m found }",
        "    http-request set-var(txn.home) var(txn.geo) if !decided { var(txn.geo) -m found }",
    ]
    # --- 4. latency (mode latency; never for signup: jurisdiction, not speed)
    if topo.mode == "latency":
        lines += [
            f"    http-request set-var(txn.lat) str({LATENCY_KEY}),map({p(LATENCY_MAP)}),"
            f"map({p(REGIONS_MAP)}) if !decided !{{ path {SIGNUP_PATH} }}",
            "    http-request set-var(txn.route) str(latency) if !decided "
            "{ var(txn.lat) -m found }",
            "    http-request set-var(txn.home) var(txn.lat) if !decided { var(txn.lat) -m found }",
        ]
    # --- 5. default
    lines += [
        "    http-request set-var(txn.route) str(default) if !decided",
        f"    http-request set-var(txn.home) str({topo.default}) if !decided",
        f"    http-request set-var(txn.zone) var(txn.home),map({p(ZONES_MAP)})",
        "    http-request set-var(txn.bekey) var(txn.home)",
        "    http-request set-var(txn.bekey) var(txn.home),concat(/,txn.xr,)"
        " if { var(txn.xr) -m found }",
        # Toward the region: what the edge decided, and that this edge sent it.
        "    http-request set-header X-Skylift-Home %[var(txn.home)]",
        "    http-request set-header X-Skylift-Route %[var(txn.route)]",
        "    http-request set-header X-Skylift-Country %[var(txn.country)] "
        "if { var(txn.country) -m found }",
        f"    http-request set-header X-Skylift-Hop {spec.region}",
    ]
    tail = [
        # HAProxy's own 502/503/504 (marked by http-error below) become the documented 503.
        "    http-after-response set-status 503 if { res.hdr(X-Skylift-Error) -m found }",
        "    http-after-response del-header X-Skylift-Error",
        "    http-after-response set-header X-Skylift-Route %[var(txn.route)] "
        "if { var(txn.route) -m found }",
        "    use_backend be_region_health if region_health",
        "    use_backend be_local if hop",
        f"    use_backend %[var(txn.bekey),map({p(BACKENDS_MAP)},be_unknown)]",
        "    default_backend be_unknown",
    ]
    routing = [line if line.strip().startswith("acl ") else _only_routing(line) for line in lines]
    if spec.cache is not None:  # after routing: the cache needs txn.home
        tail = [
            *cache_request_lines(spec.cache, spec.region),
            *cache_response_lines(spec.region),
            *tail,
        ]
    return head + routing + tail


def _error_lines(spec: EdgeSpec, reason: str) -> list[str]:
    """Every HAProxy-generated 502/503/504 of a forwarding backend: the documented 503."""
    return [
        f"    http-error status {code} content-type application/json "
        f"lf-string '{_json_503(reason)}' hdr Retry-After {spec.retry_after} hdr X-Skylift-Error 1"
        for code in (502, 503, 504)
    ]


def _checks(spec: EdgeSpec) -> list[str]:
    c = spec.check
    timing = f"inter {haproxy_time(c.inter)} fall {c.fall} rise {c.rise}"
    lines = [
        "",
        # Health only: this region's pool, checked on its own health path.
        "backend be_check_local",
        f"    option httpchk GET {c.path}",
        "    http-check expect status 200-299",
        f"    timeout check {haproxy_time(c.timeout)}",
        f"    server {spec.region} {spec.local} check {timing}",
        "",
        # Health only: every peer edge, on the path that reflects its own pool.
        "backend be_check_peers",
        f"    option httpchk GET {REGION_HEALTH_PATH}",
        "    http-check expect status 200",
        f"    timeout check {haproxy_time(c.timeout)}",
    ]
    lines += [
        f"    server {name} {addr} check {timing}" for name, addr in sorted(spec.peers.items())
    ]
    if not spec.peers:
        lines.append("    server none 127.0.0.1:9 disabled")
    return lines


def _local_backends(spec: EdgeSpec) -> list[str]:
    c = spec.check
    own = spec.region
    return [
        "",
        # Requests a peer edge forwarded here (already decided): this region's pool only.
        "backend be_local",
        # The pool is on this region's network: a refused connect is retried once,
        # quickly, so a dead pool answers the documented 503 well within a check period.
        "    retries 1",
        f"    timeout connect {haproxy_time(c.timeout)}",
        "    http-request return status 503 content-type application/json "
        f"lf-string '{_json_503(f'region {own} has no healthy service')}' "
        f"hdr Retry-After {spec.retry_after} if {{ nbsrv() eq 0 }}",
        "    http-request set-header X-Skylift-Route failover "
        f"if !{{ req.hdr(X-Skylift-Home) -m str {own} }}",
        f"    http-request set-var(txn.route) str(failover) if !{{ var(txn.home) -m str {own} }}",
        *_error_lines(spec, f"region {own} cannot serve this request now"),
        f"    server {own} {spec.local} track be_check_local/{own} "
        f"pool-purge-delay {haproxy_time(POOL_PURGE_DELAY)}",
        f"    http-response set-header X-Skylift-Region {own}",
        "",
        # Peer edges check this: the pool's own health answer, nothing cached.
        "backend be_region_health",
        "    retries 0",
        f"    timeout server {haproxy_time(c.timeout)}",
        f"    http-request set-path {c.path}",
        "    http-request return status 503 if { nbsrv(be_check_local) eq 0 }",
        f"    server {own} {spec.local}",
        "",
        # A value that no whitelist knows: never a fall-through to some region.
        "backend be_unknown",
        "    http-request return status 503 content-type application/json "
        """string '{"error":"region_unavailable","reason":"unknown region"}' """
        f"hdr Retry-After {spec.retry_after}",
    ]


def _checked_server(spec: EdgeSpec, region: str) -> str:
    """The one health-checked server of ``region`` (every traffic server tracks it)."""
    if region == spec.region:
        return f"be_check_local/{region}"
    return f"be_check_peers/{region}"


def _home_backend(spec: EdgeSpec, name: str, chain: tuple[str, ...]) -> list[str]:
    topo = spec.topology
    home = chain[0]
    fallback = chain[-1] if name != home_backend(home) else None
    verdict = decide(topo, RequestFacts(token_home=home, fallback=fallback), ())
    reason = verdict.reason
    checked = _checked_server(spec, home)
    lines = [
        "",
        f"backend {name}",
        # No healthy region in the chain: the documented 503 at once, with the reason.
        "    http-request return status 503 content-type application/json "
        f"lf-string '{_json_503(reason)}' hdr Retry-After {spec.retry_after} "
        "if { nbsrv() eq 0 }",
        # Decided before a server is picked: the home's own health check says it.
        f"    http-request set-header X-Skylift-Route failover if !{{ srv_is_up({checked}) }}",
        f"    http-request set-var(txn.route) str(failover) if !{{ srv_is_up({checked}) }}",
        *_error_lines(spec, f"the region serving home region {home} failed during the request"),
        f"    http-response set-var(txn.route) str(failover) if !{{ srv_name {home} }}",
        f"    http-response set-header X-Skylift-Region {spec.region} "
        f"if {{ srv_name {spec.region} }}",
    ]
    purge = f"pool-purge-delay {haproxy_time(POOL_PURGE_DELAY)}"
    for i, region in enumerate(chain):
        backup = " backup" if i else ""
        if region == spec.region:
            lines.append(
                f"    server {region} {spec.local} track be_check_local/{region}{backup} {purge}"
            )
        else:
            lines.append(
                f"    server {region} {spec.peers[region]} "
                f"track be_check_peers/{region}{backup} {purge}"
            )
    # Without ``option allbackups`` HAProxy uses the first operational backup:
    # the chain order is the preference order.
    return lines
