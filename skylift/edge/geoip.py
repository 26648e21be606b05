"""Build the edge's IP -> country map (HAProxy ``map_ip`` format) from an offline dataset.

Source: the CC0 ``@ip-location-db/geo-whois-asn-country`` package (npm), whose
CSV rows are ``start_ip,end_ip,country`` for IPv4 and IPv6 (its ``-num``
variants carry integers instead of addresses). A row's range becomes the
CIDR blocks that cover it exactly (``ipaddress.summarize_address_range``);
HAProxy's ``map_ip`` takes IPv4 and IPv6 in one file and the finest match
wins. Written by hand on the standard library: the format is three columns
and no dependency does the range -> CIDR step better than ``ipaddress``.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_CC_RE = re.compile(r"^[A-Z]{2}$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class BuildStats:
    rows: int
    cidrs: int
    skipped: int
    extra: int


def _address(text: str, v6_hint: bool | None) -> IPAddress:
    text = text.strip()
    if text.isdigit():  # the "-num" variants
        value = int(text)
        if v6_hint is None:
            v6_hint = value > 0xFFFFFFFF
        return ipaddress.IPv6Address(value) if v6_hint else ipaddress.IPv4Address(value)
    return ipaddress.ip_address(text)


def row_cidrs(row: list[str], v6_hint: bool | None = None) -> list[tuple[IPNetwork, str]] | None:
    """One ``start,end,country`` row as the CIDRs covering it; None for an unusable row."""
    if len(row) < 3 or not row[0].strip() or row[0].lstrip().startswith("#"):
        return None
    country = row[2].strip().upper()
    try:
        start, end = _address(row[0], v6_hint), _address(row[1], v6_hint)
    except ValueError:
        return None
    if not _CC_RE.match(country):
        return None
    nets: list[IPNetwork] = []
    if isinstance(start, ipaddress.IPv4Address) and isinstance(end, ipaddress.IPv4Address):
        nets.extend(ipaddress.summarize_address_range(start, end) if start <= end else ())
    if isinstance(start, ipaddress.IPv6Address) and isinstance(end, ipaddress.IPv6Address):
        nets.extend(ipaddress.summarize_address_range(start, end) if start <= end else ())
    return [(net, country) for net in nets] or None


def parse_extra(items: Iterable[str]) -> dict[str, str]:
    """``["10.0.0.0/8=DE", ...]`` -> CIDR -> country; ValueError names the bad item."""
    out: dict[str, str] = {}
    for item in items:
        cidr, sep, country = item.partition("=")
        country = country.strip().upper()
        if not sep or not _CC_RE.match(country):
            raise ValueError(f"--extra {item!r}: write CIDR=CC (a two-letter country code)")
        try:
            net = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(f"--extra {item!r}: {exc}") from exc
        out[str(net)] = country
    return out


def _csv_members(source: Path) -> Iterator[tuple[str, IO[str]]]:
    """(name, text stream) of every CSV in ``source`` (a .csv, or an npm .tgz/.tar.gz)."""
    name = source.name.lower()
    if name.endswith((".tgz", ".tar.gz", ".tar")):
        with tarfile.open(source, "r:*") as tar:
            for member in tar.getmembers():
                if not member.isfile() or not member.name.lower().endswith(".csv"):
                    continue
                raw = tar.extractfile(member)
                if raw is None:
                    continue
                with raw:
                    yield member.name, io.TextIOWrapper(raw, encoding="utf-8", newline="")
        return
    with source.open(encoding="utf-8", newline="") as handle:
        yield source.name, handle


def _v6_hint(name: str) -> bool | None:
    lowered = name.lower()
    if "ipv6" in lowered:
        return True
    if "ipv4" in lowered:
        return False
    return None


def build_map(source: Path, out: Path, extra: Mapping[str, str] | None = None) -> BuildStats:
    """Write the ``map_ip`` file ``out`` (atomically, 0644) from ``source`` plus ``extra``.

    ``extra`` entries (private networks) come first and replace a dataset
    block with the very same CIDR; a finer one wins by ``map_ip``'s own rule.
    """
    extra = dict(extra or {})
    rows = cidrs = skipped = 0
    tmp = out.with_name(f".{out.name}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tmp.open("w", encoding="ascii") as dest:
            dest.write(f"# ip -> country, built by `skylift geoip update` from {source.name}\n")
            for cidr, country in extra.items():
                dest.write(f"{cidr} {country}\n")
            for name, stream in _csv_members(source):
                hint = _v6_hint(name)
                for row in csv.reader(stream):
                    rows += 1
                    found = row_cidrs(row, hint)
                    if found is None:
                        skipped += 1
                        continue
                    for net, country in found:
                        key = str(net)
                        if key not in extra:
                            dest.write(f"{key} {country}\n")
                            cidrs += 1
            dest.flush()
            os.fsync(dest.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return BuildStats(rows=rows, cidrs=cidrs, skipped=skipped, extra=len(extra))
