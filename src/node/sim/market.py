"""A seeded, deterministic price model: one random walk per symbol.

The same seed and the same number of steps always give the same prices, so tests
and benchmarks see a reproducible market. ``set_price`` moves a symbol at will
(tests use it to cross a resting order).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from node.sim.universe import UNIVERSE, Instrument

TICK = 0.01
STEP_VOLATILITY = 0.0005  # 5 bp per step


@dataclass(frozen=True)
class Quote:
    bid: float
    ask: float
    last: float
    bid_size: int
    ask_size: int
    last_size: int
    volume: int
    open: float
    high: float
    low: float
    close: float


def _cents(value: float) -> float:
    return round(max(TICK, round(value / TICK) * TICK), 2)


class Market:
    def __init__(self, seed: int = 0, instruments: tuple[Instrument, ...] = UNIVERSE) -> None:
        self.seed = seed
        self._rng = {i.symbol: random.Random(f"{seed}:{i.symbol}") for i in instruments}
        self._quotes = {i.symbol: self._initial(i) for i in instruments}

    def _initial(self, instrument: Instrument) -> Quote:
        rng = self._rng[instrument.symbol]
        # Yesterday's close near the base price; today's open near the close.
        close = _cents(instrument.base_price * math.exp(rng.gauss(0, 0.01)))
        last = _cents(close * math.exp(rng.gauss(0, 0.005)))
        return self._quote_around(instrument.symbol, last, close=close, opening=last, volume=0)

    def _quote_around(
        self,
        symbol: str,
        last: float,
        *,
        close: float,
        opening: float,
        volume: int,
        high: float | None = None,
        low: float | None = None,
    ) -> Quote:
        rng = self._rng[symbol]
        spread = max(TICK, _cents(last * 0.0002))
        bid = _cents(last - spread / 2)
        ask = _cents(bid + spread)
        last_size = 100 * rng.randint(1, 5)
        return Quote(
            bid=bid,
            ask=ask,
            last=last,
            bid_size=100 * rng.randint(1, 10),
            ask_size=100 * rng.randint(1, 10),
            last_size=last_size,
            volume=volume + last_size,
            open=opening,
            high=max(high if high is not None else last, last),
            low=min(low if low is not None else last, last),
            close=close,
        )

    @property
    def symbols(self) -> list[str]:
        return list(self._quotes)

    def quote(self, symbol: str) -> Quote:
        return self._quotes[symbol]

    def step(self) -> None:
        """Advance every symbol by one step of its random walk."""
        for symbol, old in self._quotes.items():
            move = math.exp(self._rng[symbol].gauss(0, STEP_VOLATILITY))
            self._move(symbol, old, _cents(old.last * move))

    def set_price(self, symbol: str, price: float) -> Quote:
        """Move one symbol's last trade (and the touch around it) to ``price``."""
        old = self._quotes[symbol]
        self._move(symbol, old, _cents(price))
        return self._quotes[symbol]

    def _move(self, symbol: str, old: Quote, last: float) -> None:
        self._quotes[symbol] = self._quote_around(
            symbol,
            last,
            close=old.close,
            opening=old.open,
            volume=old.volume,
            high=old.high,
            low=old.low,
        )

    def restore(self, symbol: str, quote: Quote) -> None:
        self._quotes[symbol] = replace(quote)
