"""The geo-DNS front: PowerDNS (geoip backend) answering each country with a region's edge.

- :mod:`skylift.dns.plan`: ``DnsPlan``, the front's only input, from the config (pure)
- :mod:`skylift.dns.answers`: which edge each country's answer points at (pure, residency rules)
- :mod:`skylift.dns.health`: fall/rise over the edges' health checks (pure)
- :mod:`skylift.dns.render`: pdns.conf, the zone YAML, Route 53 / Cloudflare JSON (pure)
- :mod:`skylift.dns.mmdb`: the country database, from the edge's geoip map (file I/O)
- :mod:`skylift.dns.pdns`: run, reload and stop ``pdns_server`` (process I/O)
- :mod:`skylift.dns.front`: the loop: probe, choose, rewrite, reload (I/O)
"""
