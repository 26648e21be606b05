"""Translate skylift policies into other autoscalers' manifests (``skylift export``)."""
