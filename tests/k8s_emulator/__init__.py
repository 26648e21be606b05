"""A Kubernetes API emulator for tests (see server.py and docs/kubernetes.md)."""
