"""One assertion for every load test: skylift failed no request, and enough load arrived.

A load test asserts on what the system under test did (``report.failed``),
not on whether the test's own client kept up: ``overload_client`` requests
were never sent (``report.not_sent``), so they say nothing about skylift. A
client that fell so far behind that too little arrived fails the test with
its own message, never as a skylift failure.
"""

from __future__ import annotations

from skylift.loadgen import LoadReport


def assert_no_failed_request(report: LoadReport, *, at_least: float) -> None:
    """No request that left the client failed, and more than ``at_least`` were answered."""
    assert report.failed == 0, (
        f"{report.failed} of {report.sent - report.not_sent} requests failed: "
        f"{report.errors_by_kind}"
    )
    delivered = report.sent - report.not_sent
    assert report.ok == delivered, (report.ok, delivered, report.errors_by_kind)
    assert delivered > at_least, (
        f"the load client fell behind: {delivered} requests sent of {report.sent} due "
        f"({report.not_sent} never sent, send lag p99 {report.lag_p99_ms:.0f} ms), "
        f"wanted more than {at_least:g}"
    )
