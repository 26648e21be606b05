"""One region's backup settings resolved against the config file and the environment.

Secrets are read here and nowhere else: the bot token from its environment
variable or file, the key from its file. Both are read only when needed, so
``skylift backup list`` works without them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from skylift.backup.errors import BackupError, SecretMissing
from skylift.backup.keys import RegionKey
from skylift.backup.telegram import BotApi
from skylift.config.regions import Region, RegionBackup, libpq_url

if TYPE_CHECKING:  # skylift.config pulls in the whole engine: backup workers stay lean
    from skylift.config import LoadedConfig


class UnknownRegion(BackupError):
    """The region is not in the config, or has no backup section (a usage error)."""


@dataclass(frozen=True)
class RegionContext:
    name: str
    region: Region
    backup: RegionBackup
    base_dir: Path
    environ: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_config(
        cls, loaded: LoadedConfig, name: str, environ: Mapping[str, str] | None = None
    ) -> RegionContext:
        regions = loaded.config.regions
        if name not in regions:
            known = ", ".join(sorted(regions)) or "none"
            raise UnknownRegion(f"region {name!r} is not in {loaded.path} (regions: {known})")
        region = regions[name]
        if region.backup is None:
            raise UnknownRegion(
                f"region {name!r} has no backup section: add regions.{name}.backup to the config"
            )
        env = os.environ if environ is None else environ
        return cls(name, region, region.backup, loaded.base_dir, env)

    def to_job(self) -> dict[str, Any]:
        """Plain data a worker process rebuilds this context from (names of secrets only)."""
        return {
            "name": self.name,
            "region": self.region.model_dump(mode="json"),
            "base_dir": str(self.base_dir),
        }

    @classmethod
    def from_job(
        cls, job: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> RegionContext:
        region = Region.model_validate(job["region"], context={"validated": True})
        assert region.backup is not None
        env = os.environ if environ is None else environ
        return cls(str(job["name"]), region, region.backup, Path(job["base_dir"]), env)

    @property
    def database_url(self) -> str:
        return libpq_url(self.region.database_url)

    @property
    def database(self) -> str:
        return urlsplit(self.database_url).path.strip("/")

    @property
    def key_path(self) -> Path:
        return (self.base_dir / self.backup.key_file).resolve()

    @property
    def chat_id(self) -> int | str:
        return self.backup.telegram.chat_id

    def key(self) -> RegionKey:
        return RegionKey.load(self.key_path, self.name)

    def bot_token(self) -> str:
        telegram = self.backup.telegram
        where = f"regions.{self.name}.backup.telegram"
        if telegram.bot_token_env is not None:
            token = self.environ.get(telegram.bot_token_env, "").strip()
            if not token:
                raise SecretMissing(
                    f"environment variable {telegram.bot_token_env} (from "
                    f"{where}.bot_token_env) is not set: export the region's bot token in it"
                )
            return token
        assert telegram.bot_token_file is not None
        path = (self.base_dir / telegram.bot_token_file).resolve()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError:
            raise SecretMissing(
                f"cannot read the bot token file {path} ({where}.bot_token_file): create it "
                "with the region's bot token, mode 0600"
            ) from None
        if not token:
            raise SecretMissing(f"bot token file {path} is empty: write the region's bot token")
        return token

    def bot(self) -> BotApi:
        telegram = self.backup.telegram
        return BotApi(
            telegram.api_url,
            self.bot_token(),
            timeout=telegram.timeout,
            max_retries=telegram.max_retries,
            min_interval=telegram.min_interval,
        )
