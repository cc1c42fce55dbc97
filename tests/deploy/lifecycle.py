"""The ``with`` lifecycle both deploy topologies share: a failed start cleans up what it made."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StartedInWith:
    """``with`` runs ``start()`` (closing whatever it made if it fails) and always ``close()``."""

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
