"""The simulator's built-in contract universe: liquid US stocks and ETFs with stable conIds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Instrument:
    symbol: str
    con_id: int
    primary_exchange: str
    long_name: str
    base_price: float
    stock_type: str = "COMMON"
    industry: str = ""
    category: str = ""

    @property
    def valid_exchanges(self) -> str:
        return f"SMART,{self.primary_exchange}"


def _etf(symbol: str, con_id: int, name: str, price: float) -> Instrument:
    return Instrument(symbol, con_id, "ARCA", name, price, "ETF", "Funds", "Equity Fund")


UNIVERSE: tuple[Instrument, ...] = (
    Instrument("AAPL", 265598, "NASDAQ", "APPLE INC", 190.0, industry="Technology"),
    Instrument("MSFT", 272093, "NASDAQ", "MICROSOFT CORP", 410.0, industry="Technology"),
    Instrument("AMZN", 3691937, "NASDAQ", "AMAZON.COM INC", 180.0, industry="Consumer, Cyclical"),
    Instrument("GOOGL", 208813719, "NASDAQ", "ALPHABET INC-CL A", 170.0, industry="Communications"),
    Instrument("META", 107113386, "NASDAQ", "META PLATFORMS INC", 480.0, industry="Communications"),
    Instrument("NVDA", 4815747, "NASDAQ", "NVIDIA CORP", 120.0, industry="Technology"),
    Instrument("TSLA", 76792991, "NASDAQ", "TESLA INC", 240.0, industry="Consumer, Cyclical"),
    Instrument("AMD", 4391, "NASDAQ", "ADVANCED MICRO DEVICES", 150.0, industry="Technology"),
    Instrument("NFLX", 15124833, "NASDAQ", "NETFLIX INC", 620.0, industry="Communications"),
    Instrument("INTC", 270639, "NASDAQ", "INTEL CORP", 30.0, industry="Technology"),
    Instrument("JPM", 1520593, "NYSE", "JPMORGAN CHASE & CO", 200.0, industry="Financial"),
    Instrument("BAC", 10098, "NYSE", "BANK OF AMERICA CORP", 38.0, industry="Financial"),
    Instrument("XOM", 13977, "NYSE", "EXXON MOBIL CORP", 115.0, industry="Energy"),
    Instrument("JNJ", 8719, "NYSE", "JOHNSON & JOHNSON", 155.0, industry="Consumer, Non-cyclical"),
    Instrument("WMT", 13824, "NYSE", "WALMART INC", 68.0, industry="Consumer, Non-cyclical"),
    Instrument("KO", 8894, "NYSE", "COCA-COLA CO/THE", 62.0, industry="Consumer, Non-cyclical"),
    Instrument("DIS", 6459, "NYSE", "WALT DISNEY CO/THE", 100.0, industry="Communications"),
    Instrument("V", 49462172, "NYSE", "VISA INC-CLASS A SHARES", 275.0, industry="Financial"),
    _etf("SPY", 756733, "SPDR S&P 500 ETF TRUST", 540.0),
    _etf("QQQ", 320227571, "INVESCO QQQ TRUST SERIES 1", 470.0),
    _etf("IWM", 9579970, "ISHARES RUSSELL 2000 ETF", 210.0),
    _etf("DIA", 73128548, "SPDR DJIA TRUST", 400.0),
    _etf("GLD", 51529211, "SPDR GOLD SHARES", 215.0),
    _etf("TLT", 15547841, "ISHARES 20+ YEAR TREASURY BO", 92.0),
    _etf("XLF", 4215235, "FINANCIAL SELECT SECTOR SPDR", 42.0),
)

_BY_SYMBOL = {i.symbol: i for i in UNIVERSE}
_BY_CON_ID = {i.con_id: i for i in UNIVERSE}


def lookup(
    symbol: str = "", con_id: int = 0, sec_type: str = "STK", currency: str = "USD"
) -> Instrument | None:
    """Resolve a request's contract the way IB does: conId wins, else symbol."""
    if sec_type not in ("", "STK") or currency not in ("", "USD"):
        return None
    if con_id:
        found = _BY_CON_ID.get(con_id)
        if found is None or (symbol and symbol.upper() != found.symbol):
            return None
        return found
    return _BY_SYMBOL.get(symbol.upper())
