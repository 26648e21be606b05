"""The fault suite: each test injects one fault into a running deployment under steady
load and asserts what skylift does about it. Fixtures from the e2e harness."""

from __future__ import annotations

from tests.e2e.conftest import deploy

__all__ = ["deploy"]
