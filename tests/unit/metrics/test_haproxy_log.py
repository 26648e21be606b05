"""The log parser on lines captured from a real HAProxy 2.6.12 (see the integration test)."""

from __future__ import annotations

import pytest

from skylift.metrics.haproxy_log import LOG_FORMAT, parse_line
from skylift.metrics.latency import LatencyTracker

# Captured from /usr/sbin/haproxy 2.6.12 with `log <sock> local0` (RFC 3164, the default)...
RFC3164 = (
    b"<134>Nov 25 13:03:30 haproxy[19531]: 127.0.0.1:35334 [25/Nov/2026:13:03:30.210] "
    b'fe_web be_web/r1 0/0/0/7/7 404 500 ---- 1/1/0/0/0 0/0 "GET /nope?x=1 HTTP/1.1"\n'
)
# ... and with `log <sock> format rfc5424 local0`.
RFC5424 = (
    b"<134>1 2026-11-25T13:03:38.317905+00:00 - haproxy 19725 - - 127.0.0.1:46348 "
    b"[25/Nov/2026:13:03:38.316] fe_web be_web/r1 0/0/0/1/1 200 1221 ---- 1/1/0/0/0 0/0 "
    b'"GET / HTTP/1.1"\n'
)
NOSRV = (
    b"<134>1 2026-11-25T13:03:38.319888+00:00 - haproxy 19725 - - 127.0.0.1:46372 "
    b"[25/Nov/2026:13:03:38.319] fe_web be_dead/<NOSRV> 0/-1/-1/-1/0 503 217 SC-- "
    b'1/1/0/0/0 0/0 "GET /dead/x HTTP/1.1"\n'
)
NOTICES = [
    b"<129>1 2026-11-25T13:03:38.280301+00:00 - haproxy 19725 - - Server be_dead/d1 is DOWN, "
    b'reason: Layer4 connection problem, info: "Connection refused", check duration: 0ms. '
    b"0 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.\n",
    b"<128>1 2026-11-25T13:03:38.280332+00:00 - haproxy 19725 - - backend be_dead has no "
    b"server available!\n",
    b"<133>Nov 25 13:03:30 haproxy[19531]: Proxy fe_web started.\n",
    b"",
    b"<134>garbage",
]


def test_rfc3164_line() -> None:
    rec = parse_line(RFC3164)
    assert rec is not None
    assert (rec.backend, rec.server, rec.status) == ("be_web", "r1", 404)
    assert (rec.queue_ms, rec.connect_ms, rec.response_ms, rec.active_ms) == (0, 0, 7, 7)
    assert rec.latency == pytest.approx(0.007)


def test_rfc5424_line() -> None:
    rec = parse_line(RFC5424)
    assert rec is not None
    assert (rec.backend, rec.server, rec.status, rec.active_ms) == ("be_web", "r1", 200, 1)


def test_request_without_server_still_has_its_latency() -> None:
    rec = parse_line(NOSRV)
    assert rec is not None
    assert (rec.backend, rec.server, rec.status) == ("be_dead", "<NOSRV>", 503)
    assert (rec.queue_ms, rec.response_ms, rec.active_ms) == (-1, -1, 0)


def test_raw_format_and_ipv6_client() -> None:
    line = (
        b"[::1]:5000 [25/Nov/2026:13:03:30.210] fe_web be_web/r2 1/2/3/40/+46 502 0 SH-- "
        b'1/1/0/0/0 0/0 "POST /a HTTP/1.1"'
    )
    rec = parse_line(line)
    assert rec is not None
    assert (rec.server, rec.status, rec.active_ms) == ("r2", 502, 46)


@pytest.mark.parametrize("line", NOTICES)
def test_notices_are_not_requests(line: bytes) -> None:
    assert parse_line(line) is None


def test_log_format_is_the_one_the_renderer_configures() -> None:
    from skylift.lb import render

    assert render.LOG_FORMAT == LOG_FORMAT


def test_tracker_feeds_the_service_of_the_backend() -> None:
    tracker = LatencyTracker({"be_web": "web", "be_api": "api"})
    for _ in range(19):
        tracker.feed(RFC5424, now=10.0)  # 1 ms
    tracker.feed(RFC3164, now=10.0)  # 7 ms
    tracker.feed(NOSRV, now=10.0)  # be_dead: not ours
    tracker.feed(NOTICES[0], now=10.0)
    assert tracker.count("web", 10.0) == 20
    assert tracker.quantile("web", 0.95, 10.0) == pytest.approx(0.001, rel=0.021)
    assert tracker.quantile("web", 1.0, 10.0) == pytest.approx(0.007, rel=0.021)
    assert tracker.quantile("api", 0.95, 10.0) is None
    assert tracker.quantile("nope", 0.95, 10.0) is None
    c = tracker.counters
    assert (c.lines, c.requests, c.unknown_backend, c.not_requests) == (22, 20, 1, 1)


def test_tracker_follows_services_that_come_and_go_keeping_the_others_window() -> None:
    tracker = LatencyTracker({"be_web": "web", "be_api": "api"})
    tracker.feed(RFC5424, now=10.0)
    tracker.follow({"be_web": "web", "be_dead": "dead"})  # `skylift apply`: api out, dead in
    assert tracker.count("web", 10.0) == 1  # kept
    assert tracker.quantile("api", 0.95, 10.0) is None
    tracker.feed(NOSRV, now=10.0)
    assert tracker.count("dead", 10.0) == 1
