"""``replication:``: opt-in cross-region copies of users' rows (off unless present).

With this section, each region's controller keeps, on its own PostgreSQL
server, a logical-replication copy of the users of every region of another
zone who named it as their fallback (see docs/replication.md). Every
region's PostgreSQL then needs ``wal_level = logical``.
"""

from __future__ import annotations

from pydantic import Field

from skylift.config.base import Model
from skylift.units import Duration


class ReplicationSettings(Model):
    """How often the copies are reconciled, and how long one database call may take."""

    every: Duration = Field(
        5.0, gt=0, description="seconds between two reconcile passes of a region's copies"
    )
    timeout: Duration = Field(
        5.0, gt=0, description="connect and statement timeout of each database call"
    )
