"""The ``skylift`` command line: one module per command group.

``app`` holds the root Typer app and the controller commands; ``common`` the
shared output, exit codes and config loading; the other modules each register
one group. The package imports nothing on its own, so ``python -m
skylift.platform`` (which uses ``skylift.cli.platform``) stays lean.
"""

from __future__ import annotations


def main() -> None:
    """The console script's entry point."""
    from skylift.cli.app import main as run

    run()
