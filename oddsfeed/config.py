"""Settings as the entry points load them (composition root): the TOML file, the
environment and the command-line flags, with every file the settings name read here, so
that the adapters receive values, never paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from oddsfeed.settings import AuthSettings, Settings, SettingsError, load_settings

DEFAULT_CONFIG = Path("config/oddsfeed.toml")


def read_key_files(auth: AuthSettings) -> AuthSettings:
    """``auth`` with each entry of ``public_keys`` that is not PEM text replaced by the
    text of the file it names; raises OSError for a file that cannot be read."""
    keys = [key if "-----BEGIN" in key else Path(key).read_text(encoding="utf-8")
            for key in auth.public_keys]
    return auth.model_copy(update={"public_keys": keys})


def load_cli_settings(
    config_path: Path | None,
    overrides: dict[str, Any],
    env: dict[str, str] | None = None,
) -> Settings:
    """Return settings from ``config_path`` (else ``config/oddsfeed.toml`` if it exists,
    else built-in defaults), then ``env`` (default: os.environ), then ``overrides``, with
the public-key files of ``auth.public_keys`` read into PEM text.

    Raises click.ClickException on an unreadable file or invalid settings.
    """
    path = config_path
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    text: str | None = None
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot read config {path}: {exc.strerror}") from exc
    try:
        settings = load_settings(text, dict(os.environ) if env is None else env, overrides)
    except SettingsError as exc:
        where = f" in {path}" if path is not None else ""
        raise click.ClickException(f"invalid settings{where}: {exc}") from exc
    try:
        return settings.model_copy(update={"auth": read_key_files(settings.auth)})
    except OSError as exc:
        raise click.ClickException(f"cannot read auth.public_keys file {exc.filename}: "
                                   f"{exc.strerror}".lower()) from exc
