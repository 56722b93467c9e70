"""The background "office" loop both sandboxes share: a seeded RNG, fates drawn once per record, the tick
counter, (re)configuration and the asyncio loop that ticks every `pace_s` seconds while enabled. What a tick
does (which records move, and how) is each provider's own `Office.tick()`."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Hashable
from typing import ClassVar, Generic, Protocol, TypeVar


class OfficeSettings(Protocol):
    @property
    def enabled(self) -> bool: ...

    @property
    def pace_s(self) -> float: ...

    @property
    def seed(self) -> int: ...


C = TypeVar("C", bound=OfficeSettings)
F = TypeVar("F")


class OfficeLoop(Generic[C, F]):
    """Subclasses give `config` (and `_store` to replace it), `tick()`, and draw fates with `_fate_for`."""

    failure_message: ClassVar[str] = "sandbox office tick failed"

    def __init__(self) -> None:
        self.rng = random.Random(self.config.seed)
        self._fates: dict[Hashable, F] = {}
        self.ticks = 0

    @property
    def config(self) -> C:
        raise NotImplementedError

    def _store(self, config: C) -> None:
        raise NotImplementedError

    def tick(self) -> dict[str, int]:
        raise NotImplementedError

    def configure(self, config: C) -> None:
        """Apply a new configuration; the RNG restarts from its seed (fates already drawn are forgotten)."""
        self._store(config)
        self.rng = random.Random(config.seed)
        self._fates.clear()

    def reset(self) -> None:
        self.configure(self.config)
        self.ticks = 0

    def _fate_for(self, key: Hashable, draw: Callable[[float], F]) -> F:
        """The fate of record `key`, drawn once: `draw(u)` with `u` the next uniform number of the RNG."""
        fate = self._fates.get(key)
        if fate is None:
            fate = draw(self.rng.random())
            self._fates[key] = fate
        return fate

    async def run(self) -> None:
        log = logging.getLogger(type(self).__module__)
        while True:
            await asyncio.sleep(self.config.pace_s)
            if self.config.enabled:
                try:
                    self.tick()
                except Exception:  # keep the office alive; the error has no homeowner data
                    log.exception(self.failure_message)


__all__ = ["OfficeLoop", "OfficeSettings"]
