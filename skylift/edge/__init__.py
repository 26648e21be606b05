"""A region's edge: HAProxy that routes by home region and fails over within a zone.

- :mod:`skylift.edge.spec`: ``EdgeSpec``, the frozen input (built by the orchestration)
- :mod:`skylift.edge.render`: ``render_edge(spec) -> EdgeFiles`` (pure: config, maps, keys)
- :mod:`skylift.edge.runner`: ``Edge`` (start, apply, stop, region_health, set_latency_best)
- :mod:`skylift.edge.latency`: the latency prober (pure choice + async probe loop)
- :mod:`skylift.edge.keys`: every region's JWKS -> kid -> SPKI PEM
- :mod:`skylift.edge.geoip`: the offline IP -> country map (``skylift geoip update``)

Nothing is re-exported here, so importing the spec stays cheap.
"""
