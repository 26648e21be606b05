"""``skylift capacity SERVICE``: how much one replica and one host carry, measured.

Open-loop step load (``skylift.loadgen``) against a running deployment: first one
replica directly (its knee: the highest rate whose p95 stays under the SLO with
no errors), then through HAProxy with 1, 2, ... replicas until one more replica
adds less than 10 % (the host is saturated). The generator and the service are
pinned to separate cores where the host has two or more. Results are appended
to ``<state_dir>/capacity/<service>.jsonl`` (``skylift plan`` reads the last).
Exit codes: 0 ok, 1 runtime failure (no controller, no knee), 2 usage, 3 config.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from skylift.cli.common import EXIT_USAGE, ConfigOpt, Output, OutputOpt, emit, fail, load_or_exit
from skylift.plan.knee import (
    Measured,
    StepResult,
    classify_bottleneck,
    concurrent_users,
    cpu_per_request,
    find_knee,
    next_rate,
)
from skylift.units import parse_duration

SATURATED = 1.10
"""One more replica must raise the host's knee by at least 10 % to count."""
RESOLUTION = 0.05
"""Searches stop when pass and failure are within 5 % of the failing rate."""


def results_path(state_dir: Path, service: str) -> Path:
    return state_dir / "capacity" / f"{service}.jsonl"


def latest_result(state_dir: Path, service: str) -> dict[str, Any] | None:
    """The newest stored ``capacity`` result for ``service``, None if never measured."""
    path = results_path(state_dir, service)
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return None
    return json.loads(lines[-1]) if lines else None


def _log(message: str) -> None:
    typer.echo(message, err=True)


def _search(
    step: Callable[[float], tuple[StepResult, Measured]],
    slo_ms: float,
    *,
    start: float,
    ceiling: float,
    floor: float = 0.0,
    max_steps: int = 12,
) -> tuple[list[StepResult], list[Measured]]:
    """Run steps chosen by ``next_rate`` until it stops (or ``max_steps``)."""
    steps: list[StepResult] = []
    seen: list[Measured] = []
    for _ in range(max_steps):
        rate = next_rate(
            steps, slo_ms, start=start, resolution=RESOLUTION, ceiling=ceiling, floor=floor
        )
        if rate is None:
            break
        result, measured = step(rate)
        steps.append(result)
        seen.append(measured)
        verdict = (
            "untrusted (generator behind)"
            if not result.generator_ok
            else ("pass" if result.passes(slo_ms) else "fail")
        )
        _log(
            f"  {result.replicas} replica(s) {rate:8.1f} req/s: p95 {result.p95_ms:7.1f} ms, "
            f"ok {result.ok_rps:6.1f}/s, errors {result.errors}: {verdict}"
            + (
                f" (contended: {result.foreign_cpu_pct:.0f}% CPU by others)"
                if result.contended
                else ""
            )
        )
    return steps, seen


def _saturating(steps: list[StepResult], seen: list[Measured], slo_ms: float) -> Measured | None:
    """What was measured at the lowest failing step (else the highest step)."""
    trusted = [(s, m) for s, m in zip(steps, seen, strict=True) if s.generator_ok]
    failing = [(s, m) for s, m in trusted if not s.passes(slo_ms)]
    pool = failing or trusted
    if not pool:
        return None
    pick = min if failing else max
    return pick(pool, key=lambda sm: sm[0].offered_rps)[1]


def capacity_command(
    service: Annotated[str, typer.Argument(help="service name")],
    config: ConfigOpt = Path("skylift.yaml"),
    path: Annotated[str, typer.Option(help="request sent, e.g. /work?ms=20")] = "/",
    slo: Annotated[str, typer.Option(help="p95 latency objective")] = "500ms",
    think_time: Annotated[str, typer.Option(help="a user's pause between requests")] = "5s",
    step: Annotated[str, typer.Option(help="length of each load step")] = "3s",
    start_rps: Annotated[float, typer.Option(min=0.1, help="first step's rate")] = 5.0,
    max_replicas: Annotated[
        int | None, typer.Option(min=1, help="most replicas to try per host (default 2 x cores)")
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Find the max req/s per replica and per host at the SLO, and what saturates."""
    from skylift.client import ApiClient, ApiError, ControllerUnreachable
    from skylift.plan import stepload

    loaded = load_or_exit(config)
    if service not in loaded.config.services:
        raise fail(f"no service {service!r}; have: {', '.join(loaded.config.services)}", EXIT_USAGE)
    try:
        slo_s, think_s, step_s = (parse_duration(v) for v in (slo, think_time, step))
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if not path.startswith("/"):
        raise fail(f"--path must start with '/', got {path!r}", EXIT_USAGE)
    slo_ms = slo_s * 1000.0
    timeout = max(2.0 * slo_s, 2.0)
    state_dir = loaded.state_dir
    haproxy_pids = _haproxy_pids(state_dir / "haproxy.pid")
    pinning = stepload.plan_pinning()
    with ApiClient(loaded, timeout=10) as api:

        def status() -> dict[str, Any]:
            return api.get("/api/v1/services")["services"][service]  # type: ignore[no-any-return]

        try:
            svc = status()
        except ControllerUnreachable as exc:
            raise fail(f"no running controller: start it with `skylift up` ({exc})") from None
        except (ApiError, KeyError) as exc:
            raise fail(f"the controller does not run {service!r}: {exc}") from None
        original = int(svc["desired"])
        autoscaled = svc.get("autoscale") is not None and not (svc.get("autoscale") or {}).get(
            "paused", False
        )
        ready = [r for r in svc["replicas"] if r["state"] == "ready"]
        if not ready:
            raise fail(f"service {service!r} has no ready replica")
        cap_replicas = max_replicas or 2 * pinning.service_cores
        budget = loaded.config.services[service].database
        db_max = None if budget is None else budget.max_connections - budget.reserve
        paused = False
        try:
            if autoscaled:
                api.set_autoscale_paused(service, True)
                paused = True
            stepload.pin(pinning, [r["pid"] for r in ready if r["pid"]] + haproxy_pids, _log)
            one = ready[0]
            # held (MAINT in HAProxy): out of rotation, and not replaced when overload
            # fails its health checks; the controller starts a stand-in meanwhile
            api.post(f"/api/v1/services/{service}/replicas/{one['id']}/hold")
            _log(f"{service}: one replica ({one['id']}, held) directly at {one['address']}")
            sampler = stepload.Sampler([one["pid"]] if one["pid"] else [], [], pinning, db_max)

            def replica_step(rps: float) -> tuple[StepResult, Measured]:
                return stepload.run_step(
                    f"http://{one['address']}",
                    path,
                    rps,
                    step_s,
                    sampler,
                    replicas=1,
                    timeout=timeout,
                )

            try:
                r_steps, r_seen = _search(replica_step, slo_ms, start=start_rps, ceiling=1e6)
            finally:
                api.post(f"/api/v1/services/{service}/replicas/{one['id']}/release")
            r_knee = find_knee(r_steps, slo_ms)
            if r_knee.max_rps is None:
                raise fail(
                    f"no step passed (p95 < {slo_ms:g} ms, no errors) even at {start_rps:g} "
                    "req/s: lower --start-rps, or check the service"
                )
            replica_bneck = classify_bottleneck(_saturating(r_steps, r_seen, slo_ms) or Measured())
            host: dict[int, list[StepResult]] = {}
            knees: dict[int, tuple[float, float]] = {}
            host_bneck = replica_bneck
            prev = 0.0
            front = f"http://{svc['frontend']}"
            for n in range(1, cap_replicas + 1):
                ready_n = _scale(api, status, service, n, loaded.config.services[service])
                if ready_n is None:
                    continue
                stepload.pin(pinning, [r["pid"] for r in ready_n if r["pid"]], _log)
                sampler_n = stepload.Sampler(
                    [r["pid"] for r in ready_n if r["pid"]], haproxy_pids, pinning, db_max
                )
                _log(f"{service}: {n} replica(s) through HAProxy at {front}")

                def host_step(
                    rps: float, n: int = n, sampler_n: stepload.Sampler = sampler_n
                ) -> tuple[StepResult, Measured]:
                    return stepload.run_step(
                        front, path, rps, step_s, sampler_n, replicas=n, timeout=timeout
                    )

                high = round(n * r_knee.max_rps * SATURATED, 2)
                steps_n, seen_n = _search(
                    host_step,
                    slo_ms,
                    start=high,
                    ceiling=high,
                    floor=prev * 0.9 if prev else 0.5 * r_knee.max_rps,
                )
                host[n] = steps_n
                knee_n = find_knee(steps_n, slo_ms)
                if knee_n.max_rps is None:
                    break
                knees[n] = (knee_n.max_rps, knee_n.p95_ms or 0.0)
                host_bneck = classify_bottleneck(_saturating(steps_n, seen_n, slo_ms) or Measured())
                if prev and knee_n.max_rps < SATURATED * prev:
                    break  # one more replica did not help: the host is saturated
                prev = max(prev, knee_n.max_rps)
        except (ControllerUnreachable, ApiError) as exc:
            raise fail(f"the controller stopped answering: {exc}") from None
        finally:
            stepload.unpin(pinning)
            try:
                if int(status()["desired"]) != original:
                    api.post(f"/api/v1/services/{service}/scale", json={"replicas": original})
                if paused:
                    api.set_autoscale_paused(service, False)
            except (ControllerUnreachable, ApiError) as exc:
                _log(f"warning: could not restore {original} replicas / autoscaling: {exc}")
    if not knees:
        raise fail("no step passed through HAProxy: check the balancer")
    cpu_ms = cpu_per_request(r_steps)
    # the host's figure is the best knee; its replica count the fewest within 10 % of it
    top_n = max(knees, key=lambda k: knees[k][0])
    host_rps, host_p95 = knees[top_n]
    best_n = min(k for k in knees if knees[k][0] * SATURATED >= host_rps)
    result: dict[str, Any] = {
        "service": service,
        "path": path,
        "slo_ms": slo_ms,
        "measured_at": time.time(),
        "max_rps_per_replica": r_knee.max_rps,
        "p95_ms_at_max": round(r_knee.p95_ms or 0.0, 1),
        "bottleneck": host_bneck[0],
        "bottleneck_evidence": host_bneck[1],
        "replica_bottleneck": replica_bneck[0],
        "replica_bottleneck_evidence": replica_bneck[1],
        "replicas_per_host": best_n,
        "max_rps_per_host": host_rps,
        "p95_ms_at_host_max": round(host_p95, 1),
        "think_time_s": think_s,
        "concurrent_users": concurrent_users(host_rps, think_s, host_p95 / 1000.0),
        "cores": len(pinning.generator or set()) + pinning.service_cores,
        "service_cores": pinning.service_cores,
        "pinned": pinning.generator is not None,
        "cpu_ms_per_request": None if cpu_ms is None else round(cpu_ms, 2),
        "rps_per_core": None if cpu_ms is None else round(1000.0 / cpu_ms, 1),
        "contended_steps": sum(s.contended for s in r_steps)
        + sum(s.contended for ss in host.values() for s in ss),
        "untrusted_steps": sum(not s.generator_ok for s in r_steps)
        + sum(not s.generator_ok for ss in host.values() for s in ss),
        "steps": {
            "replica": [s.to_dict(slo_ms) for s in r_steps],
            "host": {str(n): [s.to_dict(slo_ms) for s in ss] for n, ss in host.items()},
        },
    }
    out = results_path(state_dir, service)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as fh:
            fh.write(json.dumps(result) + "\n")
    except OSError as exc:
        raise fail(f"cannot store the result in {out}: {exc}") from None
    emit(result, output, _table(result))


def _haproxy_pids(pidfile: Path) -> list[int]:
    try:
        return [int(p) for p in pidfile.read_text().split()]
    except (OSError, ValueError):
        return []


def _scale(
    api: Any, status: Callable[[], dict[str, Any]], service: str, n: int, spec: Any
) -> list[dict[str, Any]] | None:
    """Set ``n`` replicas and wait until exactly ``n`` are ready (start + drain timeouts
    + 30 s); None when the autoscale policy's min/max clamps ``n`` away."""
    answer = api.post(f"/api/v1/services/{service}/scale", json={"replicas": n})
    if int(answer.get("desired", n)) != n:
        _log(f"{service}: {n} replica(s) is outside the autoscale policy's min/max: skipped")
        return None
    deadline = time.monotonic() + float(spec.start_timeout) + float(spec.drain_timeout) + 30.0
    while time.monotonic() < deadline:
        svc = status()
        ready = [r for r in svc["replicas"] if r["state"] == "ready"]
        if len(ready) == n and len(svc["replicas"]) == n:
            return ready
        time.sleep(0.3)
    raise fail(f"{service}: {n} replica(s) not ready in time")


def _table(r: dict[str, Any]) -> str:
    rows = [
        ("per replica", f"{r['max_rps_per_replica']:g} req/s at p95 {r['p95_ms_at_max']:g} ms"),
        (
            "per host",
            f"{r['max_rps_per_host']:g} req/s with {r['replicas_per_host']} replica(s), "
            f"p95 {r['p95_ms_at_host_max']:g} ms",
        ),
        ("bottleneck", f"{r['bottleneck']} ({r['bottleneck_evidence']})"),
        (
            "users",
            f"about {r['concurrent_users']} concurrent at {r['think_time_s']:g}s think time",
        ),
        (
            "cores",
            f"{r['service_cores']} for the service"
            + (", 1 for the generator" if r["pinned"] else " shared with the generator"),
        ),
        (
            "cpu/request",
            f"{r['cpu_ms_per_request']} ms: {r['rps_per_core']} req/s per replica with a "
            "core of its own",
        ),
        ("untrusted", f"{r['untrusted_steps']} step(s) the generator could not keep up with"),
        ("contended", f"{r['contended_steps']} step(s) other processes took the cores in"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def register(app: typer.Typer) -> None:
    """Mount ``capacity`` on the skylift CLI."""
    app.command("capacity")(capacity_command)


__all__ = ["capacity_command", "latest_result", "register", "results_path"]
