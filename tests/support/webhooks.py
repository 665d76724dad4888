"""What webhook tests share (a pytest plugin, see tests/conftest.py): a receiver on
loopback (tests/fakes/receiver.py) as the `receiver` fixture, and settings that let the
connector deliver to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector import sealed
from connector.config import Settings, load_settings
from tests.fakes.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def receiving_settings(database_url: str, tmp_path: Path, encryption_key: str | None = None,
                       **webhooks: Any) -> Settings:
    """Settings whose webhooks may reach a receiver on loopback (private targets are
    refused otherwise), with a short read timeout; `webhooks` overrides more."""
    return load_settings(environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml")},
                         overrides={"database": {"url": database_url},
                                    "logging": {"access_log": False},
                                    "azure_sync": {"encryption_key":
                                                   encryption_key or sealed.new_key()},
                                    "webhooks": {"allow_private_targets": True,
                                                 "read_timeout_seconds": 2.0, **webhooks}})
