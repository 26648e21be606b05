"""Open-loop load generation: schedules built up front, requests sent on time.

Public surface::

    plan = constant_plan("http://127.0.0.1:8080", "/work?ms=5", rps=100, duration=30)
    report = await run_load(plan)                  # or:
    with run_load_in_thread(plan) as load: ...     # act on the system meanwhile
    load.result().to_dict()
"""

from skylift.loadgen.plan import LoadPlan, constant_plan, trace_plan
from skylift.loadgen.report import LoadProgress, LoadReport, percentile
from skylift.loadgen.runner import LoadHandle, run_load, run_load_in_thread
from skylift.loadgen.schedule import constant_schedule

__all__ = [
    "LoadHandle",
    "LoadPlan",
    "LoadProgress",
    "LoadReport",
    "constant_plan",
    "constant_schedule",
    "percentile",
    "run_load",
    "run_load_in_thread",
    "trace_plan",
]
