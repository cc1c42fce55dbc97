"""The ``with`` lifecycle both deploy topologies share: a failed start cleans up what it made."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StartedInWith:
    """``with`` runs ``start()`` (closing whatever it made if it fails) and always ``close()``.
    A topology publishes its balancer on loopback at ``ws_port`` / ``http_port``."""

    ws_port: int
    http_port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
