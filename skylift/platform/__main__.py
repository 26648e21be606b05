"""``python -m skylift.platform serve --port PORT``: the replica command in platform.yaml."""

from skylift.cli.platform import platform_main

platform_main()
