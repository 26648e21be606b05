"""Phase 3 cost: price files, packing replicas onto instances, and pricing a replay.

``prices`` holds the price-file model (YAML, JSON Schema in ``prices.schema.json``);
``model`` turns a simulator timeline into money (pure functions, no I/O);
``plan`` searches the reserved / on-demand / spot mix that keeps the SLO.
"""
