"""The simulator: replay a traffic trace against the engine's own ``decide``.

Public surface: ``load_trace``, ``ServiceModel``, ``simulate``, ``SimResult``,
``render_chart`` and the bench helpers.
"""

from skylift.sim.bench import (
    BUILTIN,
    PolicyError,
    markdown_table,
    preset_policy,
    run_bench,
    verdicts,
)
from skylift.sim.chart import render_chart
from skylift.sim.replay import simulate, simulate_oracle
from skylift.sim.result import SimResult, Timeline
from skylift.sim.service import ServiceModel, capacity_for_peak
from skylift.sim.trace import Trace, TraceError, load_trace, parse_trace

__all__ = [
    "BUILTIN",
    "PolicyError",
    "ServiceModel",
    "SimResult",
    "Timeline",
    "Trace",
    "TraceError",
    "capacity_for_peak",
    "load_trace",
    "markdown_table",
    "parse_trace",
    "preset_policy",
    "render_chart",
    "run_bench",
    "simulate",
    "simulate_oracle",
    "verdicts",
]
