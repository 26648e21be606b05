"""A region's edge: HAProxy that routes by home region and fails over within a zone."""
