"""skylift's local HTTP API: status, events, scale, health and Prometheus metrics."""
