"""Speed of the engine and the simulator; prints Markdown for docs/benchmarks.md.

1. Replay the 87-day 1-minute wc98 trace at a 15 s decision interval (~500,000
   decisions) per policy; the target is under 10 s for one policy.
2. Decisions/second for 1,000 services, each with its own state and a rolling
   series of 15 s samples, decided round-robin the way a controller would.

Run: .venv/bin/python benchmarks/sim_speed.py [--traces ../shared/traces]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from pathlib import Path

from skylift.engine import Observations, ScalingPolicy, Series, State, decide
from skylift.sim import ServiceModel, capacity_for_peak, load_trace, preset_policy, simulate

REPO = Path(__file__).resolve().parents[1]


def replay_speed(traces: Path, repeats: int) -> list[str]:
    trace = load_trace(traces / "wc98.csv")
    capacity = capacity_for_peak(trace.peak_rate, 50)
    model = ServiceModel(capacity=capacity, startup=60.0)
    rows = ["| policy | decisions | best wall time s | decisions/s |", "|---|---|---|---|"]
    for name in ("oracle", "hpa", "roadmap"):
        best = float("inf")
        decisions = 0
        for _ in range(repeats):
            policy = preset_policy(name, capacity, 50)
            start = time.perf_counter()
            result = simulate(trace, policy, model, interval=15.0, name=name)
            best = min(best, time.perf_counter() - start)
            decisions = result.decisions
        rate = f"{decisions / best:,.0f}" if decisions else "n/a"
        rows.append(f"| {name} | {decisions:,} | {best:.2f} | {rate} |")
    return rows


def fleet_speed(services: int, rounds: int) -> list[str]:
    rng = random.Random(7)
    rows = [
        "| policy | services | decisions | wall time s | decisions/s |",
        "|---|---|---|---|---|",
    ]
    for name in ("hpa", "roadmap"):
        policy = ScalingPolicy.model_validate({"preset": name, "capacity": 100.0, "max": 200})
        compiled = policy.compiled
        fleet = []
        for _ in range(services):
            times: list[float] = []
            cpu: list[float] = []
            rps: list[float] = []
            obs = Observations(
                window=60.0,
                cpu=Series(times, cpu),
                memory=Series(times, cpu),
                rps=Series(times, rps),
                p95_latency=Series(times, cpu),
            )
            start = rng.randint(1, 20)
            fleet.append((times, cpu, rps, obs, [State(start, start)], rng.uniform(0.5, 20.0)))
        # warm up one hour of history so the 'for 15m' windows are full
        for step in range(240):
            now = 15.0 * step
            for times, cpu, rps, _obs, _state, load in fleet:
                times.append(now)
                cpu.append(load / 10.0)
                rps.append(load * 100.0)
        began = time.perf_counter()
        for step in range(240, 240 + rounds):
            now = 15.0 * step
            for times, cpu, rps, obs, state_box, load in fleet:
                state = state_box[0]
                level = load * (1.5 if (step // 40) % 2 else 1.0)
                times.append(now)
                cpu.append(level / max(state.ready, 1))
                rps.append(level * 100.0)
                decision = decide(compiled, obs, state, now)
                state_box[0] = decision.state.with_ready(decision.desired)
        wall = time.perf_counter() - began
        total = services * rounds
        rows.append(f"| {name} | {services:,} | {total:,} | {wall:.2f} | {total / wall:,.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=REPO.parent / "shared" / "traces")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}\n"
    )
    print("Replay of wc98 (125,310 one-minute rows, 87 days) at a 15 s interval:\n")
    print("\n".join(replay_speed(args.traces, args.repeats)))
    print(f"\nDecide for a fleet ({args.rounds} rounds, one decision per service per round):\n")
    print("\n".join(fleet_speed(args.services, args.rounds)))


if __name__ == "__main__":
    main()
