"""skylift: one config file and one control plane from one VPS to multi-region autoscaling."""

__version__ = "0.1.0"
