"""The MaxMind-format country database PowerDNS looks clients up in, built from the edge's map.

Source: the edge's own IP -> country map (``edge.geoip_map``, written by
``skylift geoip update`` from the CC0 geo-whois-asn-country data) plus
``edge.extra_countries``, so the DNS front and the edges place a client in
the same country. Written with the ``mmdb-writer`` package (the format's
search tree and data section are not worth writing by hand) as an IPv6
database holding IPv4 at ``::/96``, the layout libmaxminddb (PowerDNS's
reader) looks IPv4 addresses up in. Records carry only
``country.iso_code``: ``%cc`` is all the zone uses.

Overlaps resolve as in HAProxy's ``map_ip``: the most specific network wins
(networks are inserted coarsest first); an extra entry replaces a map entry
for the very same network.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import netaddr
from mmdb_writer import MMDBWriter

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_CC_RE = re.compile(r"^[A-Z]{2}$")
STAMP_SUFFIX = ".source"


@dataclass(frozen=True, slots=True)
class MmdbStats:
    networks: int
    countries: int
    skipped: int


def map_entries(lines: Iterable[str]) -> Iterator[tuple[IPNetwork, str] | None]:
    """``CIDR CC`` lines of an HAProxy ``map_ip`` file; None for a line that is not one."""
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 2 or not _CC_RE.match(parts[1].upper()):
            yield None
            continue
        try:
            yield ipaddress.ip_network(parts[0], strict=False), parts[1].upper()
        except ValueError:
            yield None


def merged(
    entries: Iterable[tuple[IPNetwork, str]], extra: Mapping[str, str]
) -> list[tuple[IPNetwork, str]]:
    """Map entries plus extras (same network: the extra wins), coarsest network first."""
    table: dict[IPNetwork, str] = dict(entries)
    for cidr, country in extra.items():
        table[ipaddress.ip_network(cidr, strict=False)] = country.upper()
    return sorted(table.items(), key=lambda item: (_tree_depth(item[0]), item[0].version))


def _tree_depth(network: IPNetwork) -> int:
    """Prefix length in the IPv6 tree (IPv4 sits under ``::/96``)."""
    return network.prefixlen + (96 if network.version == 4 else 0)


def write_mmdb(entries: list[tuple[IPNetwork, str]], out: Path) -> None:
    """Write ``entries`` (coarsest first) as a GeoIP2-Country-shaped database, atomically."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoIP2-Country",
        description="skylift: IP -> country from the edge's geoip map",
    )
    records: dict[str, dict[str, dict[str, str]]] = {}
    for network, country in entries:
        record = records.setdefault(country, {"country": {"iso_code": country}})
        writer.insert_network(netaddr.IPSet([str(network)]), record)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        writer.to_db_file(str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def source_stamp(geoip_map: Path | None, extra: Mapping[str, str]) -> str:
    """What tells a database built from other inputs apart (map's mtime and size, extras)."""
    if geoip_map is None:
        head = "none"
    else:
        try:
            st = geoip_map.stat()
            head = f"{geoip_map}:{st.st_mtime_ns}:{st.st_size}"
        except OSError:
            head = f"{geoip_map}:missing"
    return head + "|" + ",".join(f"{k}={v}" for k, v in sorted(extra.items()))


def build_mmdb(geoip_map: Path | None, extra: Mapping[str, str], out: Path) -> MmdbStats:
    """Build ``out`` from the edge's map file (if any) plus the extra networks.

    Raises OSError when the map is named but cannot be read.
    """
    skipped = 0
    entries: list[tuple[IPNetwork, str]] = []
    if geoip_map is not None:
        try:
            handle = geoip_map.open(encoding="ascii", errors="replace")
        except OSError as exc:
            raise OSError(
                f"cannot read edge.geoip_map {geoip_map} ({exc.strerror}): build it with "
                "`skylift geoip update`"
            ) from None
        with handle:
            for entry in map_entries(handle):
                if entry is None:
                    skipped += 1
                else:
                    entries.append(entry)
    table = merged(entries, extra)
    write_mmdb(table, out)
    out.with_name(out.name + STAMP_SUFFIX).write_text(source_stamp(geoip_map, extra))
    return MmdbStats(networks=len(table), countries=len({c for _, c in table}), skipped=skipped)


def mmdb_fresh(geoip_map: Path | None, extra: Mapping[str, str], out: Path) -> bool:
    """``out`` exists and was built from exactly these inputs."""
    try:
        built = out.with_name(out.name + STAMP_SUFFIX).read_text()
    except OSError:
        return False
    return out.exists() and built == source_stamp(geoip_map, extra)
