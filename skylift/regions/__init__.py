"""Phase 2: regions, residency and failover (pure rules in ``rules``)."""
