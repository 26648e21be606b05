"""``skylift dns render|records|serve|status``: the geo-DNS front (PowerDNS, geoip backend).

``render`` writes PowerDNS's files (pdns.conf, the zone, the country
database) for an operator-run server; ``records`` prints the answers, and the
same answers as Route 53 / Cloudflare JSON (untested against those
services); ``serve`` runs PowerDNS and rewrites its answers when a region's
edge goes down or comes back; ``status`` reads what a running ``serve`` last
wrote. ``--down REGION`` shows the answers as if those regions were down.
Exit codes: 0 ok, 1 failure (PowerDNS cannot start, a file cannot be
written), 2 usage, 3 config.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skylift.cli.common import EXIT_CONFIG, EXIT_USAGE, Output, emit, fail, load_or_exit

if TYPE_CHECKING:
    from skylift.dns.answers import GeoAnswers
    from skylift.dns.plan import DnsPlan

dns_app = typer.Typer(
    help="Geo-DNS front: PowerDNS answering each country with a region's edge.",
    no_args_is_help=True,
)

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", envvar="SKYLIFT_CONFIG", help="skylift.yaml to use"),
]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table or json")]
DownOpt = Annotated[
    list[str] | None,
    typer.Option("--down", help="answer as if this region were down (repeatable)"),
]


def register(app: typer.Typer) -> None:
    """Mount ``skylift dns ...`` on the skylift CLI."""
    app.add_typer(dns_app, name="dns")


def _plan(config: Path) -> DnsPlan:
    from skylift.dns.plan import dns_plan

    loaded = load_or_exit(config)
    if loaded.config.dns is None:
        typer.echo(
            f"{config}: no `dns:` block: add `dns: {{zone: geo.example.com}}` (see docs/geodns.md)",
            err=True,
        )
        raise typer.Exit(EXIT_CONFIG)
    return dns_plan(loaded.config, loaded.base_dir)


def _healthy(plan: DnsPlan, down: list[str] | None) -> frozenset[str]:
    names = plan.topology.names
    unknown = [d for d in down or [] if d not in names]
    if unknown:
        raise fail(f"--down {unknown}: not regions of this config ({', '.join(names)})", EXIT_USAGE)
    return frozenset(n for n in names if n not in (down or []))


def _answers_table(plan: DnsPlan, answers: GeoAnswers) -> str:
    from skylift.dns.answers import DEFAULT

    lines = [f"zone {plan.zone}, ttl {plan.ttl}s, names {', '.join(plan.names)}"]
    rows = [*answers.countries, (DEFAULT, answers.default)]
    for country, answer in rows:
        addresses = ", ".join(plan.addresses[answer.region])
        note = "" if answer.why == "home" else f"  ({answer.why}, home {answer.home})"
        lines.append(f"  {country:<8} -> {answer.region:<12} {addresses}{note}")
    return "\n".join(lines)


@dns_app.command("render")
def render(
    config: ConfigOpt = Path("skylift.yaml"),
    down: DownOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Write pdns.conf, the zone file and the country database into the DNS state dir."""
    import time

    from skylift.dns.answers import choose_answers
    from skylift.dns.front import prepare_files

    plan = _plan(config)
    answers = choose_answers(plan.topology, _healthy(plan, down))
    try:
        rebuilt = prepare_files(plan, answers, int(time.time()))
    except (OSError, ValueError) as exc:
        raise fail(f"DNS files in {plan.state_dir}: {exc}") from None
    data = {
        "pdns_conf": str(plan.pdns_conf),
        "zones_file": str(plan.zones_file),
        "mmdb": str(plan.mmdb),
        "mmdb_rebuilt": rebuilt,
        "run": f"pdns_server --config-dir={plan.state_dir}",
        "answers": answers.as_dict(),
    }
    table = (
        f"wrote {plan.pdns_conf}, {plan.zones_file}, {plan.mmdb}"
        f"{' (rebuilt)' if rebuilt else ''}\nrun: {data['run']}\n" + _answers_table(plan, answers)
    )
    emit(data, output, table)


@dns_app.command("records")
def records(
    config: ConfigOpt = Path("skylift.yaml"),
    down: DownOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Print the answers; -o json adds Route 53 and Cloudflare forms (untested against them)."""
    from skylift.dns.answers import choose_answers
    from skylift.dns.render import UNTESTED, records_document

    plan = _plan(config)
    up = _healthy(plan, down)
    answers = choose_answers(plan.topology, up)
    table = _answers_table(plan, answers) + f"\n(-o json: Route 53 / Cloudflare JSON, {UNTESTED})"
    emit(records_document(plan, answers, up), output, table)


@dns_app.command("serve")
def serve(
    config: ConfigOpt = Path("skylift.yaml"),
    pdns_server: Annotated[str, typer.Option(help="pdns_server binary")] = "pdns_server",
    pdns_control: Annotated[str, typer.Option(help="pdns_control binary")] = "pdns_control",
) -> None:
    """Run PowerDNS and keep its answers matching the regions' health (until SIGINT/SIGTERM)."""
    from skylift.dns.front import GeoDnsFront
    from skylift.dns.pdns import PowerDNS, PowerDNSError

    plan = _plan(config)
    server = PowerDNS(plan, server_binary=pdns_server, control_binary=pdns_control)
    front = GeoDnsFront(plan, server)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await front.start()
        typer.echo(f"serving {plan.zone} on {plan.listen} (PowerDNS pid {server.pid})", err=True)
        await front.run(stop)

    try:
        asyncio.run(main())
    except PowerDNSError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"DNS files in {plan.state_dir}: {exc}") from None


@dns_app.command("status")
def status(config: ConfigOpt = Path("skylift.yaml"), output: OutputOpt = Output.table) -> None:
    """What the running ``serve`` last wrote: health, answers, the last rewrites and their times."""
    plan = _plan(config)
    try:
        data = json.loads(plan.state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise fail(f"no DNS state in {plan.state_file}: is `skylift dns serve` running?") from None
    lines = [f"zone {data['zone']} on {data['listen']}, serial {data['serial']}"]
    lines += [f"  {r:<12} {'up' if up else 'DOWN'}" for r, up in data["health"].items()]
    lines += [f"  {c:<8} -> {a['region']} ({a['why']})" for c, a in data["answers"].items()]
    for change in data.get("changes", [])[-3:]:
        lines.append(
            f"  change serial {change['serial']}: {change['regions']} moved {change['moved']} "
            f"in {change['since_first_check_s']}s from the first failed check"
        )
    emit(data, output, "\n".join(lines))
