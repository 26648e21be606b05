"""HAProxy's HTTP log line, as skylift configures it, and its parser.

skylift uses HAProxy's standard HTTP log format (the one ``option httplog``
produces): humans and common tools already read it, and it carries all the
parser needs: the backend (``%b``, so the service) and the timers in ms.
Latency is ``%Ta``, the request's total active time (from the first byte
of the request to the last byte of the response, queue and connect
included, client idle and TLS handshake excluded): what a user waits for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LOG_FORMAT = (
    "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %{+Q}r"
)
"""The ``log-format`` of every proxy whose latency skylift measures."""

# Only the leading fields are parsed; the request line (%{+Q}r, last) may be
# truncated by HAProxy's line length limit without harm.
_BODY = re.compile(
    rb"(?P<client>\S+) \[(?P<date>[^\]]*)\] (?P<frontend>\S+) "
    rb"(?P<backend>[^/\s]+)/(?P<server>\S+) "
    rb"(?P<TR>-?\d+)/(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tr>-?\d+)/\+?(?P<Ta>-?\d+) "
    rb"(?P<status>-?\d+) "
)
_PRI = re.compile(rb"<\d{1,3}>")


@dataclass(frozen=True, slots=True)
class LogRecord:
    """The fields of one request that metrics use; timers in milliseconds (-1: not reached)."""

    backend: str
    server: str
    status: int
    queue_ms: int  # %Tw
    connect_ms: int  # %Tc
    response_ms: int  # %Tr: server's time to response headers
    active_ms: int  # %Ta: total active time, the latency skylift reports

    @property
    def latency(self) -> float:
        """Seconds the request was active (``%Ta``)."""
        return self.active_ms / 1000.0


def _message(line: bytes) -> bytes:
    """Strip the syslog header (RFC 3164, RFC 5424, or none) HAProxy put in front."""
    pri = _PRI.match(line)
    if pri is None:
        return line  # "format raw", or already stripped
    rest = line[pri.end() :]
    if rest.startswith(b"1 "):  # RFC 5424: VERSION TS HOST APP PID MSGID SD MSG
        parts = rest.split(b" ", 7)
        return parts[7] if len(parts) == 8 else rest
    # RFC 3164: "Oct 17 12:00:00 [host ]tag[pid]: MSG"; the time has no ": ".
    colon = rest.find(b": ")
    return rest[colon + 2 :] if colon >= 0 else rest


def parse_line(line: bytes) -> LogRecord | None:
    """The request in one syslog line, or None if it is not a request log line.

    HAProxy also sends notices (``Proxy fe_web started.``, server state
    changes) to the same target; those are not errors, just not requests.
    """
    body = _message(line.rstrip(b"\n"))
    match = _BODY.match(body)
    if match is None:
        match = _BODY.search(line)  # an unusual header: find the body anywhere
        if match is None:
            return None
    return LogRecord(
        backend=match["backend"].decode("ascii", "replace"),
        server=match["server"].decode("ascii", "replace"),
        status=int(match["status"]),
        queue_ms=int(match["Tw"]),
        connect_ms=int(match["Tc"]),
        response_ms=int(match["Tr"]),
        active_ms=int(match["Ta"]),
    )
