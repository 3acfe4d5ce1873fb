"""The simulated paper account: cash, positions and the values IB reports for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node.sim.market import Market
from node.sim.universe import lookup

STARTING_CASH = 1_000_000.0
INITIAL_MARGIN_RATE = 0.25
MAINTENANCE_MARGIN_RATE = 0.25
BUYING_POWER_MULTIPLE = 4.0


@dataclass
class Position:
    symbol: str
    con_id: int
    quantity: float
    avg_cost: float  # per share, commission included, as IB reports it
    realized_pnl: float = 0.0  # today's, for this contract (updatePortfolio reports it per row)


@dataclass
class Fill:
    """What a fill did to the account."""

    realized_pnl: float | None  # None when the fill only opened or added


@dataclass
class Account:
    account_id: str
    cash: float = STARTING_CASH
    realized_pnl: float = 0.0
    start_of_day_equity: float = STARTING_CASH
    positions: dict[str, Position] = field(default_factory=dict)

    def apply_fill(
        self, symbol: str, con_id: int, signed_qty: float, price: float, commission: float
    ) -> Fill:
        """Book a fill: cash moves by the trade value and commission, the position by the qty."""
        self.cash -= signed_qty * price + commission
        pos = self.positions.get(symbol) or Position(symbol, con_id, 0.0, 0.0)
        realized: float | None = None
        if pos.quantity == 0 or (pos.quantity > 0) == (signed_qty > 0):
            total = pos.quantity + signed_qty
            pos.avg_cost = (pos.quantity * pos.avg_cost + signed_qty * price + commission) / total
            pos.quantity = total
        else:
            closing = min(abs(signed_qty), abs(pos.quantity))
            direction = 1.0 if pos.quantity > 0 else -1.0
            realized = (price - pos.avg_cost) * closing * direction - commission
            self.realized_pnl += realized
            pos.realized_pnl += realized
            remainder = signed_qty + closing * direction  # what is left after closing
            pos.quantity += signed_qty
            if pos.quantity == 0:
                pos.avg_cost = 0.0
            elif abs(remainder) > 0:
                pos.avg_cost = price  # flipped: the new side opened at this price
        self.positions[symbol] = pos
        return Fill(realized)

    def market_value(self, market: Market) -> float:
        return sum(p.quantity * market.quote(p.symbol).last for p in self.positions.values())

    def gross_position_value(self, market: Market) -> float:
        return sum(abs(p.quantity) * market.quote(p.symbol).last for p in self.positions.values())

    def unrealized_pnl(self, market: Market) -> float:
        return sum(
            (market.quote(p.symbol).last - p.avg_cost) * p.quantity for p in self.positions.values()
        )

    def net_liquidation(self, market: Market) -> float:
        return self.cash + self.market_value(market)

    def values(self, market: Market) -> list[tuple[str, str, str]]:
        """(key, value, currency) rows as reqAccountUpdates and account summary report them."""
        nlv = self.net_liquidation(market)
        gross = self.gross_position_value(market)
        init_margin = gross * INITIAL_MARGIN_RATE
        maint_margin = gross * MAINTENANCE_MARGIN_RATE
        available = nlv - init_margin
        excess = nlv - maint_margin
        money = {
            "NetLiquidation": nlv,
            "TotalCashValue": self.cash,
            "SettledCash": self.cash,
            "AccruedCash": 0.0,
            "CashBalance": self.cash,
            "AvailableFunds": available,
            "ExcessLiquidity": excess,
            "BuyingPower": available * BUYING_POWER_MULTIPLE,
            "EquityWithLoanValue": nlv,
            "PreviousDayEquityWithLoanValue": self.start_of_day_equity,
            "GrossPositionValue": gross,
            "InitMarginReq": init_margin,
            "MaintMarginReq": maint_margin,
            "FullInitMarginReq": init_margin,
            "FullMaintMarginReq": maint_margin,
            "FullAvailableFunds": available,
            "FullExcessLiquidity": excess,
            "RegTEquity": nlv,
            "RegTMargin": gross * 0.5,
            "SMA": max(0.0, nlv - gross * 0.5),
            "UnrealizedPnL": self.unrealized_pnl(market),
            "RealizedPnL": self.realized_pnl,
            "StockMarketValue": self.market_value(market),
        }
        rows = [
            ("AccountCode", self.account_id, ""),
            ("AccountType", "INDIVIDUAL", ""),
            ("Currency", "USD", "USD"),
            ("Cushion", f"{excess / nlv if nlv else 0:.6f}", ""),
            ("DayTradesRemaining", "-1", ""),
            ("Leverage-S", f"{gross / nlv if nlv else 0:.4f}", ""),
            ("ExchangeRate", "1.00", "USD"),
        ]
        rows += [(key, f"{value:.2f}", "USD") for key, value in money.items()]
        return rows

    def daily_pnl(self, market: Market) -> float:
        return self.net_liquidation(market) - self.start_of_day_equity

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "cash": self.cash,
            "realized_pnl": self.realized_pnl,
            "start_of_day_equity": self.start_of_day_equity,
            "positions": [vars(p) for p in self.positions.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Account:
        account = cls(
            account_id=str(data["account_id"]),
            cash=float(data["cash"]),
            realized_pnl=float(data["realized_pnl"]),
            start_of_day_equity=float(data.get("start_of_day_equity", STARTING_CASH)),
        )
        for raw in data.get("positions", []):
            pos = Position(
                str(raw["symbol"]),
                int(raw["con_id"]),
                float(raw["quantity"]),
                float(raw["avg_cost"]),
                float(raw.get("realized_pnl", 0.0)),
            )
            if lookup(pos.symbol) is not None:
                account.positions[pos.symbol] = pos
        return account
