"""Two regions must never share a backup chat or a bot: the config-time check.

Residency of backups rests on each region having its own chat and its own
bot: a shared chat puts one region's (encrypted) data where the other
region's operators and bot can read and delete it; a shared token lets one
region's bot prune the other's backups. The config names chats and token
*sources*, so this pure check compares what can be compared without reading
a secret: the chat (same Bot API server + same chat id, '@Name' and
'@name' alike, ``-100`` and ``"-100"`` alike), the token environment
variable's name and the token file's path (both relative paths resolve
against the same config directory, so a lexical normalisation suffices
here). Token *values*, symlinked files and '@name' vs numeric id are
compared at ``backup run`` time (:mod:`skylift.backup.all_regions`).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from skylift.config.regions import Region, TelegramTarget

_NUMERIC = re.compile(r"^-?\d+$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def chat_key(chat_id: int | str) -> str:
    """A chat id as Telegram compares it: numeric ids as integers, '@usernames' lowercased."""
    text = str(chat_id).strip()
    if _NUMERIC.match(text):
        return str(int(text))
    if text.startswith("@"):
        return text.lower()  # Telegram usernames are case-insensitive
    return text


def server_key(api_url: str) -> str:
    """A Bot API base URL without the spelling differences that name the same server."""
    parts = urlsplit(api_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def token_source_key(telegram: TelegramTarget) -> tuple[str, str]:
    """Where the bot token comes from: ('env', NAME) or ('file', normalised path)."""
    if telegram.bot_token_env is not None:
        return "env", telegram.bot_token_env
    assert telegram.bot_token_file is not None
    return "file", posixpath.normpath(telegram.bot_token_file.strip())


def shared_backup_targets(regions: Mapping[str, Region]) -> list[str]:
    """Every pair of regions whose backups share a chat or a token source, each with its fix."""
    problems: list[str] = []
    chats: dict[tuple[str, str], str] = {}
    tokens: dict[tuple[str, str], str] = {}
    for name, region in regions.items():
        if region.backup is None:
            continue
        telegram = region.backup.telegram
        where = f"regions.{name}.backup.telegram"
        chat = (server_key(telegram.api_url), chat_key(telegram.chat_id))
        first = chats.setdefault(chat, name)
        if first != name:
            problems.append(
                f"regions {first} and {name} back up to the same chat "
                f"(regions.{first}.backup.telegram.chat_id and {where}.chat_id are both "
                f"{chat[1]} on {chat[0]}): every region needs its own chat; create one for "
                f"{name} and set {where}.chat_id"
            )
        kind, source = token_source_key(telegram)
        first = tokens.setdefault((kind, source), name)
        if first != name:
            field = "bot_token_env" if kind == "env" else "bot_token_file"
            problems.append(
                f"regions {first} and {name} use the same bot token "
                f"(regions.{first}.backup.telegram.{field} and {where}.{field} are both "
                f"{source!r}): every region needs its own bot; create a bot for {name} and "
                f"point {where}.{field} at its token"
            )
    return problems
