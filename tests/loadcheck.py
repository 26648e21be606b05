"""One assertion for every load test: skylift failed no request, and enough load arrived.

A load test asserts on what the system under test did (``report.failed``),
not on whether the test's own client kept up: ``overload_client`` requests
were never sent and a 408 is HAProxy giving up on a client too slow to send
its request (``report.client_errors``), so they say nothing about skylift. A
client that fell so far behind that too little was answered fails the test
with its own message, never as a skylift failure.
"""

from __future__ import annotations

from skylift.loadgen import LoadReport

CLIENT_TIMEOUT = 30.0
"""Each load-test request's deadline (the loadgen's default is 5 s). On a busy host the
client's own event loop can run seconds late (send lag p99 of 4 s was measured at 40
rps with a load average of 10 on 2 cores): a response that came in time but was read
late must not turn into a ``timeout``. A server that hangs still fails the test."""


def assert_no_failed_request(report: LoadReport, *, at_least: float) -> None:
    """No request failed on skylift's side, and more than ``at_least`` were answered 2xx."""
    assert report.failed == 0, (
        f"{report.failed} requests failed: {report.errors_by_kind} "
        f"(client send lag p99 {report.lag_p99_ms:.0f} ms)"
    )
    assert report.ok > at_least, (
        f"the load client fell behind: {report.ok} answered of {report.sent} due, "
        f"{report.client_errors} lost on the client's side ({report.errors_by_kind}, "
        f"send lag p99 {report.lag_p99_ms:.0f} ms); wanted more than {at_least:g}"
    )
