"""Build ingest/data/symbols.csv, the symbol table the ticker linker ships with.

Sources, each named in the `source` column of every row it contributed to:
- pytickersymbols (MIT): index constituents with company names (S&P 500/100/600, NASDAQ 100, Dow,
  DAX, FTSE 100, CAC 40, Nikkei 225, ...). US listings keep their plain ticker; a foreign company
  with a NYSE/NASDAQ listing (an ADR) gets that ticker, because that is what US social posts use;
  the rest keep their home Yahoo symbol (SIE.DE, ULVR.L, 7203.T).
- stocktickers (MIT): plain NYSE and NASDAQ ticker lists. They have no names, so those rows are
  reachable only by cashtag, exchange prefix or a bare ticker in finance context. The package's
  other exchange lists (London IOB codes, Frankfurt ids) are not tickers people write, so unused.
- hand: aliases people actually write (Google, Facebook, JPMorgan, Caterpillar), fixes for rows the
  packages got wrong, crypto, ETFs and market indices; and scripts/symbol_names.py, names for the
  unnamed stocktickers listings people talk about (Chewy, Macy's, Ryanair, Infosys, Petrobras).

Columns: symbol, name, aliases, context_aliases, exchange, kind, source.
- aliases: '|'-separated names matched anywhere, case-sensitively (the capitalised form only).
- context_aliases: names that are also ordinary words or surnames (Target, Delta, Ford, Visa):
  the linker accepts them only next to company or market words ("Target shares", "Ford recalls").
  Only the hand lists put names here. A name derived from the packages that is a common English
  word (wordfreq) or a short all-caps acronym (PRA, SCA) is dropped instead: "Next", "Progressive"
  or "Compass" next to "earnings" is still more often the word than the company. The hand list
  below keeps the famous ones that stand alone (Apple, Amazon, Tesla).

Run: python scripts/build_symbols.py   (needs the `symbols` extra: pip install -e '.[symbols]'; it is a
build-time tool: the csv it writes is committed and the runtime needs none of them).
"""

from __future__ import annotations

import csv
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import stocktickers
from pytickersymbols import PyTickerSymbols
from wordfreq import zipf_frequency

from symbol_names import LISTING_ALIASES, LISTING_CONTEXT_ALIASES  # beside this script

OUT = Path(__file__).resolve().parent.parent / "ingest" / "data" / "symbols.csv"

US_INDICES = ("S&P 500", "NASDAQ 100", "DOW JONES", "S&P 100", "S&P 600")
# Order decides which listing keeps a name that several rows share (US first, then home markets).
INDEX_ORDER = US_INDICES + (
    "DAX", "FTSE 100", "CAC_40", "EURO STOXX 50", "Switzerland 20", "AEX", "IBEX 35", "NIKKEI 225",
    "BEL 20", "OMX Stockholm 30", "OMX Helsinki 25", "MDAX", "TecDAX", "SDAX", "CAC Mid 60",
)
SUFFIX_EXCHANGE = {
    "DE": "XETRA", "F": "FRA", "L": "LSE", "PA": "EPA", "AS": "AMS", "BR": "EBR", "MC": "BME",
    "MI": "BIT", "SW": "SIX", "ST": "STO", "HE": "HEL", "T": "TYO", "HK": "HKEX", "KS": "KRX",
}
HOME_SUFFIX = {  # for index rows whose symbol lacks the market suffix (JEN -> JEN.DE)
    "DAX": "DE", "MDAX": "DE", "TecDAX": "DE", "SDAX": "DE",
}
PLAIN_US = re.compile(r"^[A-Z]{1,5}(?:\.[A-Z])?$")
COMMON_WORD_ZIPF = 3.0  # wordfreq's Zipf scale: 3 is about once per million words

# Names the packages got wrong (their own duplicates show it: AIZ and AJG shared one name).
NAME_FIXES = {
    "AIZ": "Assurant", "APO": "Apollo Global Management", "ARI": "Apollo Commercial Real Estate Finance",
    "MHK": "Mohawk Industries", "FRE.DE": "Fresenius SE", "GOOG": "Alphabet Inc. Class C",
    "FOX": "Fox Corporation Class B", "NWS": "News Corp Class B", "UA": "Under Armour Class C",
    "SMIN.L": "Smiths Group", "SMIN": "", "APAM": "Artisan Partners", "VOW.DE": "Volkswagen (ordinary)",
    "STM": "STMicroelectronics",  # listed as "STABILUS SE" with STMicro's Paris line
}
# Listings the packages map to the wrong US ticker (SI is not Siemens), keyed by their own symbol.
LISTING_FIXES = {
    "SIE.DE": ("SIE.DE", "XETRA"), "SGRO.L": ("SGRO.L", "LSE"), "TTE.PA": ("TTE", "NYSE"),
    "INGA.AS": ("ING", "NYSE"), "ORNBV.HE": ("ORNBV.HE", "HEL"),
}
# Aliases that must never be derived from a name: they mean something else more often.
DROP_ALIASES = {
    "Nasdaq",        # the exchange or, loosely, the Composite; Nasdaq Inc keeps "Nasdaq Inc"
    "Dow",           # "the Dow" is the index; Dow Inc keeps "Dow Inc" / "Dow Chemical"
    "S&P",           # the index family, not S&P Global
    "News",          # News Corp
    "Fox",           # the animal and the network as often as the company
    "Universal", "General", "American", "United", "International", "National", "First",
    "Global", "Southern", "Public", "Republic", "Essential", "Consolidated", "Equity",
    "Host", "Match", "Ball", "Amcor", "Smith", "Graham", "Morgan", "Johnson", "Williams",
    "Ralph Lauren Corporation", "EBay", "Bancorp", "Sto", "Prudential", "Indus", "Hub", "City",
}
# Single-word names that are English words but, capitalised, almost always mean the company.
STRONG_WORD_NAMES = {
    "Apple", "Amazon", "Tesla", "Oracle", "Intel", "Meta", "Alphabet", "Shell", "Nvidia", "Boeing",
    "Disney", "Netflix", "Starbucks", "Caterpillar", "Chevron", "Honeywell", "Siemens", "Bayer",
    "Volkswagen", "Toyota", "Sony", "Nintendo", "Samsung", "Google", "Microsoft", "Walmart",
    "Costco", "Moderna", "Pfizer", "Merck", "Airbus", "Allianz", "Adidas", "Nike", "Comcast",
    "Verizon", "Qualcomm", "Broadcom", "Cisco", "Adobe", "Salesforce", "Uber", "Airbnb", "Nestle",
    "Nestlé", "Novartis", "Roche", "Unilever", "Barclays", "Vodafone", "Glencore", "Ericsson",
    "Nokia", "Volvo", "Porsche", "Ferrari", "Heineken", "Danone", "Kering", "Hermès", "Michelin",
    "Renault", "Peugeot", "Puma", "Zalando", "Infineon", "Lufthansa", "Commerzbank",
    "Humana", "Hasbro", "Mattel", "Cigna", "Aflac", "Gartner", "Allstate", "Exxon", "Halliburton",
    "Schlumberger", "Kroger", "Kellogg", "Marriott", "Expedia", "PayPal", "Lowe's", "Honda",
    "Mazda", "Nissan", "Subaru", "Canon", "Panasonic", "Hitachi", "Toshiba", "Fujitsu", "Mitsubishi",
    "Prudential", "Aviva", "Burberry", "Tesco", "Lloyds", "Rolls-Royce", "Experian", "Diageo",
    "Chanel", "Hyundai", "Carrefour",
}

US_HAND_ALIASES: dict[str, list[str]] = {
    "AAPL": ["Apple", "Apple Inc"],
    "MSFT": ["Microsoft"],
    "GOOGL": ["Google", "Alphabet", "Alphabet Inc"],
    "AMZN": ["Amazon", "Amazon.com"],
    "META": ["Meta", "Facebook", "Meta Platforms"],
    "NVDA": ["Nvidia", "NVIDIA"],
    "TSLA": ["Tesla", "Tesla Inc"],
    "NFLX": ["Netflix"],
    "BRK.B": ["Berkshire", "Berkshire Hathaway"],
    "JPM": ["JPMorgan", "JPMorgan Chase", "JP Morgan", "J.P. Morgan", "JPMorgan Chase & Co"],
    "GS": ["Goldman", "Goldman Sachs"],
    "MS": ["Morgan Stanley"],
    "BAC": ["Bank of America", "BofA"],
    "WFC": ["Wells Fargo"],
    "C": ["Citigroup", "Citi"],
    "SCHW": ["Schwab", "Charles Schwab"],
    "BLK": ["BlackRock"],
    "BX": ["Blackstone"],
    "MA": ["Mastercard", "MasterCard"],
    "AXP": ["American Express", "Amex"],
    "PYPL": ["PayPal"],
    "XYZ": ["Block Inc", "Block, Inc."],
    "COIN": ["Coinbase"],
    "HOOD": ["Robinhood"],
    "MSTR": ["MicroStrategy"],
    "GME": ["GameStop", "Gamestop"],
    "AMC": ["AMC Entertainment"],
    "PLTR": ["Palantir"],
    "CRM": ["Salesforce"],
    "ORCL": ["Oracle"],
    "ADBE": ["Adobe"],
    "IBM": ["IBM"],
    "CSCO": ["Cisco"],
    "INTC": ["Intel"],
    "AMD": ["AMD", "Advanced Micro Devices"],
    "QCOM": ["Qualcomm"],
    "AVGO": ["Broadcom"],
    "MU": ["Micron", "Micron Technology"],
    "TSM": ["TSMC", "Taiwan Semiconductor"],
    "ASML": ["ASML"],
    "ARM": ["Arm Holdings"],
    "SMCI": ["Super Micro", "Supermicro", "Super Micro Computer"],
    "DELL": ["Dell Technologies"],
    "HPQ": ["HP Inc"],
    "HPE": ["Hewlett Packard Enterprise"],
    "UBER": ["Uber"],
    "LYFT": ["Lyft"],
    "ABNB": ["Airbnb"],
    "DASH": ["DoorDash"],
    "SHOP": ["Shopify"],
    "SPOT": ["Spotify"],
    "RBLX": ["Roblox"],
    "ZM": ["Zoom Video", "Zoom Communications"],
    "PINS": ["Pinterest"],
    "SNAP": ["Snap Inc"],
    "DIS": ["Disney", "Walt Disney"],
    "WMT": ["Walmart", "Wal-Mart"],
    "COST": ["Costco"],
    "TGT": ["Target Corp"],
    "HD": ["Home Depot"],
    "LOW": ["Lowe's"],
    "MCD": ["McDonald's", "McDonalds"],
    "SBUX": ["Starbucks"],
    "NKE": ["Nike"],
    "KO": ["Coca-Cola", "Coca Cola"],
    "PEP": ["PepsiCo", "Pepsi"],
    "PG": ["Procter & Gamble", "P&G"],
    "JNJ": ["Johnson & Johnson", "J&J"],
    "PFE": ["Pfizer"],
    "MRNA": ["Moderna"],
    "MRK": ["Merck"],
    "LLY": ["Eli Lilly"],
    "ABBV": ["AbbVie"],
    "UNH": ["UnitedHealth", "UnitedHealth Group", "UnitedHealthcare"],
    "BMY": ["Bristol Myers", "Bristol-Myers Squibb", "Bristol Myers Squibb"],
    "NVO": ["Novo Nordisk"],
    "AZN": ["AstraZeneca"],
    "XOM": ["Exxon", "ExxonMobil", "Exxon Mobil"],
    "CVX": ["Chevron"],
    "COP": ["ConocoPhillips"],
    "OXY": ["Occidental Petroleum"],
    "SHEL": ["Shell", "Shell plc"],
    "BA": ["Boeing"],
    "CAT": ["Caterpillar"],
    "DE": ["Deere", "John Deere", "Deere & Co"],
    "GE": ["GE Aerospace", "General Electric"],
    "MMM": ["3M"],
    "HON": ["Honeywell"],
    "LMT": ["Lockheed", "Lockheed Martin"],
    "RTX": ["Raytheon"],
    "NOC": ["Northrop", "Northrop Grumman"],
    "GD": ["General Dynamics"],
    "UPS": ["UPS"],
    "FDX": ["FedEx"],
    "F": ["Ford Motor", "Ford Motor Co"],
    "GM": ["General Motors"],
    "RIVN": ["Rivian"],
    "LCID": ["Lucid Motors", "Lucid Group"],
    "NIO": ["Nio", "NIO"],
    "STLA": ["Stellantis"],
    "TM": ["Toyota"],
    "SONY": ["Sony"],
    "T": ["AT&T"],
    "VZ": ["Verizon"],
    "TMUS": ["T-Mobile"],
    "CMCSA": ["Comcast"],
    "WBD": ["Warner Bros. Discovery", "Warner Bros Discovery"],
    "BABA": ["Alibaba"],
    "BIDU": ["Baidu"],
    "JD": ["JD.com"],
    "PDD": ["PDD Holdings", "Pinduoduo"],
    "LI": ["Li Auto"],
    "XPEV": ["XPeng", "Xpeng"],
    "CRWD": ["CrowdStrike"],
    "PANW": ["Palo Alto Networks"],
    "NET": ["Cloudflare"],
    "DDOG": ["Datadog"],
    "MDB": ["MongoDB"],
    "SNOW": ["Snowflake Inc"],
    "MAR": ["Marriott"],
    "HLT": ["Hilton Worldwide", "Hilton Hotels"],
    "DAL": ["Delta Air Lines", "Delta Airlines"],
    "UAL": ["United Airlines"],
    "AAL": ["American Airlines"],
    "LUV": ["Southwest Airlines"],
    "CCL": ["Carnival Corp", "Carnival Corporation"],
    "CVS": ["CVS Health", "CVS"],
    "WBA": ["Walgreens"],
    "KHC": ["Kraft Heinz"],
    "MDLZ": ["Mondelez"],
    "SPGI": ["S&P Global"],
    "MCO": ["Moody's"],
    "ICE": ["Intercontinental Exchange"],
    "NDAQ": ["Nasdaq Inc", "Nasdaq, Inc."],
    "DOW": ["Dow Inc", "Dow Chemical"],
    "BB": ["BlackBerry"],
    "RDDT": ["Reddit Inc"],
    "GEV": ["GE Vernova"],
    "UNP": ["Union Pacific"],
    "VRTX": ["Vertex Pharmaceuticals"],
    "REGN": ["Regeneron"],
    "GILD": ["Gilead", "Gilead Sciences"],
    "AMGN": ["Amgen"],
    "TXN": ["Texas Instruments"],
    "LRCX": ["Lam Research"],
    "AMAT": ["Applied Materials"],
    "KLAC": ["KLA Corp"],
    "MRVL": ["Marvell", "Marvell Technology"],
    "ANET": ["Arista", "Arista Networks"],
    "NOW": ["ServiceNow"],
    "INTU": ["Intuit"],
    "WDAY": ["Workday"],
    "TTD": ["The Trade Desk", "Trade Desk"],
    "SOFI": ["SoFi"],
    "AFRM": ["Affirm Holdings"],
    "UPST": ["Upstart"],
    "CVNA": ["Carvana"],
    "CMG": ["Chipotle"],
    "LULU": ["Lululemon"],
    "EBAY": ["eBay"],
    "ETSY": ["Etsy"],
    "BKNG": ["Booking Holdings"],
    "EXPE": ["Expedia"],
    "PM": ["Philip Morris"],
    "MO": ["Altria"],
    "TAP": ["Molson Coors"],
    "STZ": ["Constellation Brands"],
    "RIO": ["Rio Tinto"],
    "BHP": ["BHP"],
    "VALE": ["Vale SA"],
    "FCX": ["Freeport-McMoRan", "Freeport McMoRan"],
    "NEM": ["Newmont"],
    "HSBC": ["HSBC"],
    "UBS": ["UBS"],
    "DB": ["Deutsche Bank"],
    "BCS": ["Barclays"],
    "SAP": ["SAP"],
    "NVS": ["Novartis"],
    "UL": ["Unilever"],
    "GSK": ["GSK", "GlaxoSmithKline"],
    "BUD": ["AB InBev", "Anheuser-Busch", "Anheuser-Busch InBev"],
    "HMC": ["Honda"],
    "BMW.DE": ["BMW"],
    "MBG.DE": ["Mercedes-Benz", "Mercedes-Benz Group"],
    "MC.PA": ["LVMH", "Louis Vuitton"],
    "VOW3.DE": ["Volkswagen", "VW"],
    "7974.T": ["Nintendo"],
    "SIE.DE": ["Siemens"],
    "ERIE": ["Erie Indemnity"],
    "ACI": ["Albertsons"],
    "CYBR": ["CyberArk"],
    "DD": ["DuPont"],
    "ON": ["ON Semiconductor", "onsemi"],
    "KKR": ["KKR"],
    "CNH": ["CNH Industrial"],
}
# Brand names people often type in lower case ("sold my tesla shares"). Their lower-case forms
# are not English words, but are still accepted only in context: a lower-case post is informal
# and "nvidia" next to "gpu prices" is about the product as often as the stock.
LOWERCASE_OK = {
    "TSLA": "tesla", "NVDA": "nvidia", "MSFT": "microsoft", "NFLX": "netflix", "GOOGL": "google",
    "META": "facebook", "PLTR": "palantir", "COIN": "coinbase", "HOOD": "robinhood",
    "GME": "gamestop", "BA": "boeing", "DIS": "disney", "SBUX": "starbucks", "WMT": "walmart",
    "COST": "costco", "PFE": "pfizer", "MRNA": "moderna", "AMD": "amd", "UBER": "uber",
    "ABNB": "airbnb", "PYPL": "paypal", "BABA": "alibaba", "XOM": "exxon", "CRM": "salesforce",
    "SHOP": "shopify", "SPOT": "spotify", "RIVN": "rivian", "SMCI": "supermicro",
    "MSTR": "microstrategy", "INTC": "intel", "AMC": "amc",
}
# Ordinary words or surnames: accepted only next to company/market words (see module doc).
US_HAND_CONTEXT_ALIASES: dict[str, list[str]] = {
    "V": ["Visa"],
    "TGT": ["Target"],
    "XYZ": ["Block", "Square"],
    "SNOW": ["Snowflake"],
    "ZM": ["Zoom"],
    "DELL": ["Dell"],
    "F": ["Ford"],
    "GM": ["GM"],
    "GE": ["GE"],
    "LCID": ["Lucid"],
    "HLT": ["Hilton"],
    "DAL": ["Delta"],
    "LUV": ["Southwest"],
    "CCL": ["Carnival"],
    "KO": ["Coke"],
    "LLY": ["Lilly"],
    "NVO": ["Novo"],
    "BP": ["BP"],
    "AMC": ["AMC"],
    "ARM": ["Arm"],
    "HSY": ["Hershey"],
    "RDDT": ["Reddit"],
    "SNAP": ["Snap"],
    "OXY": ["Occidental"],
    "GAP": ["Gap"],
    "DJI": ["Dow"],
    "WBD": ["Warner Bros"],
    "PARA": ["Paramount"],
    "MBG.DE": ["Mercedes"],
}


@dataclass
class Row:
    symbol: str
    name: str = ""
    aliases: list[str] = field(default_factory=list)
    context_aliases: list[str] = field(default_factory=list)
    exchange: str = ""
    kind: str = "equity"
    sources: list[str] = field(default_factory=list)
    priority: int = 10_000  # lower keeps a contested name

    def add_source(self, source: str) -> None:
        if source not in self.sources:
            self.sources.append(source)


HAND_ROWS: list[Row] = [
    # Crypto: coin symbols as people cashtag them. Lower-case coin names are unambiguous words.
    Row("BTC", "Bitcoin", ["Bitcoin", "bitcoin", "BTC"], [], "CRYPTO", "crypto"),
    Row("ETH", "Ethereum", ["Ethereum", "ethereum", "Ether"], [], "CRYPTO", "crypto"),
    Row("SOL", "Solana", ["Solana", "solana"], [], "CRYPTO", "crypto"),
    Row("XRP", "XRP", ["XRP"], ["Ripple"], "CRYPTO", "crypto"),
    Row("DOGE", "Dogecoin", ["Dogecoin", "dogecoin"], [], "CRYPTO", "crypto"),
    Row("ADA", "Cardano", ["Cardano"], [], "CRYPTO", "crypto"),
    Row("BNB", "BNB", ["Binance Coin"], [], "CRYPTO", "crypto"),
    Row("AVAX", "Avalanche", [], ["Avalanche"], "CRYPTO", "crypto"),
    Row("DOT", "Polkadot", ["Polkadot"], [], "CRYPTO", "crypto"),
    Row("LINK", "Chainlink", ["Chainlink"], [], "CRYPTO", "crypto"),
    Row("LTC", "Litecoin", ["Litecoin", "litecoin"], [], "CRYPTO", "crypto"),
    Row("SHIB", "Shiba Inu", ["Shiba Inu coin"], ["Shiba Inu"], "CRYPTO", "crypto"),
    Row("TRX", "Tron", [], ["Tron"], "CRYPTO", "crypto"),
    Row("TON", "Toncoin", ["Toncoin"], [], "CRYPTO", "crypto"),
    Row("USDT", "Tether", [], ["Tether"], "CRYPTO", "crypto"),
    Row("USDC", "USD Coin", ["USD Coin"], [], "CRYPTO", "crypto"),
    Row("XLM", "Stellar", [], ["Stellar"], "CRYPTO", "crypto"),
    Row("POL", "Polygon", [], ["Polygon"], "CRYPTO", "crypto"),
    Row("UNI", "Uniswap", ["Uniswap"], [], "CRYPTO", "crypto"),
    Row("ATOM", "Cosmos", [], ["Cosmos"], "CRYPTO", "crypto"),
    Row("PEPE", "Pepe", [], [], "CRYPTO", "crypto"),
    Row("SUI", "Sui", [], [], "CRYPTO", "crypto"),
    # Market indices: the symbols data vendors use, and the names newsrooms write.
    Row("SPX", "S&P 500", ["S&P 500", "S&P500", "S&P 500 index"], [], "INDEX", "index"),
    Row("NDX", "Nasdaq 100", ["Nasdaq 100", "Nasdaq-100", "NASDAQ 100"], [], "INDEX", "index"),
    Row("IXIC", "Nasdaq Composite", ["Nasdaq Composite", "Nasdaq composite"], [], "INDEX", "index"),
    Row("DJI", "Dow Jones Industrial Average",
        ["Dow Jones Industrial Average", "Dow Jones", "the Dow", "The Dow", "Dow Industrials"],
        ["Dow"], "INDEX", "index"),
    Row("RUT", "Russell 2000", ["Russell 2000"], [], "INDEX", "index"),
    Row("VIX", "Cboe Volatility Index", ["VIX", "Cboe Volatility Index"], [], "INDEX", "index"),
    Row("UKX", "FTSE 100", ["FTSE 100", "FTSE100"], ["Footsie"], "INDEX", "index"),
    Row("DAX", "DAX", ["DAX"], [], "INDEX", "index"),
    Row("N225", "Nikkei 225", ["Nikkei 225", "Nikkei"], [], "INDEX", "index"),
    # ETFs traders name by ticker ("SPY puts"); names kept to what is written out in news.
    Row("SPY", "SPDR S&P 500 ETF Trust", ["SPDR S&P 500"], [], "NYSEARCA", "etf"),
    Row("QQQ", "Invesco QQQ Trust", ["Invesco QQQ"], [], "NASDAQ", "etf"),
    Row("IWM", "iShares Russell 2000 ETF", [], [], "NYSEARCA", "etf"),
    Row("DIA", "SPDR Dow Jones Industrial Average ETF", [], [], "NYSEARCA", "etf"),
    Row("VOO", "Vanguard S&P 500 ETF", [], [], "NYSEARCA", "etf"),
    Row("VTI", "Vanguard Total Stock Market ETF", [], [], "NYSEARCA", "etf"),
    Row("TLT", "iShares 20+ Year Treasury Bond ETF", [], [], "NASDAQ", "etf"),
    Row("GLD", "SPDR Gold Shares", [], [], "NYSEARCA", "etf"),
    Row("SLV", "iShares Silver Trust", [], [], "NYSEARCA", "etf"),
    Row("USO", "United States Oil Fund", [], [], "NYSEARCA", "etf"),
    Row("ARKK", "ARK Innovation ETF", ["ARK Innovation"], [], "NYSEARCA", "etf"),
    Row("XLF", "Financial Select Sector SPDR", [], [], "NYSEARCA", "etf"),
    Row("XLE", "Energy Select Sector SPDR", [], [], "NYSEARCA", "etf"),
    Row("XLK", "Technology Select Sector SPDR", [], [], "NYSEARCA", "etf"),
    Row("SMH", "VanEck Semiconductor ETF", [], [], "NASDAQ", "etf"),
    Row("SOXL", "Direxion Daily Semiconductor Bull 3X", [], [], "NYSEARCA", "etf"),
    Row("TQQQ", "ProShares UltraPro QQQ", [], [], "NASDAQ", "etf"),
    Row("SQQQ", "ProShares UltraPro Short QQQ", [], [], "NASDAQ", "etf"),
    Row("UVXY", "ProShares Ultra VIX Short-Term Futures", [], [], "NYSEARCA", "etf"),
    Row("HYG", "iShares iBoxx High Yield Corporate Bond ETF", [], [], "NYSEARCA", "etf"),
    Row("EEM", "iShares MSCI Emerging Markets ETF", [], [], "NYSEARCA", "etf"),
    Row("KRE", "SPDR S&P Regional Banking ETF", [], [], "NYSEARCA", "etf"),
    Row("IBIT", "iShares Bitcoin Trust", ["iShares Bitcoin Trust"], [], "NASDAQ", "etf"),
    Row("GBTC", "Grayscale Bitcoin Trust", ["Grayscale Bitcoin Trust"], [], "NYSEARCA", "etf"),
    # Companies the packages lack or list only on a foreign line.
    Row("SHEL", "Shell plc", [], [], "NYSE", "equity"),
    Row("BP", "BP p.l.c.", ["BP plc"], [], "NYSE", "equity"),
    Row("HMC", "Honda Motor Co.", [], [], "NYSE", "equity"),
    Row("PARA", "Paramount Global", ["Paramount Global"], [], "NASDAQ", "equity"),
    Row("RDDT", "Reddit, Inc.", [], [], "NYSE", "equity"),
    Row("GAP", "Gap Inc.", ["Gap Inc"], [], "NYSE", "equity"),
    Row("AAL", "American Airlines Group", [], [], "NASDAQ", "equity"),
    Row("SNOW", "Snowflake Inc.", [], [], "NYSE", "equity"),
    Row("AI", "C3.ai", ["C3.ai", "C3 AI"], [], "NYSE", "equity"),
    Row("005930.KS", "Samsung Electronics", ["Samsung", "Samsung Electronics"], [], "KRX", "equity"),
    Row("0700.HK", "Tencent", ["Tencent", "Tencent Holdings"], [], "HKEX", "equity"),
    Row("1211.HK", "BYD Company", ["BYD"], [], "HKEX", "equity"),
    Row("1810.HK", "Xiaomi", ["Xiaomi"], [], "HKEX", "equity"),
]

LEGAL_SUFFIXES = re.compile(
    r"(?:,?\s+(?:Inc\.?|Incorporated|Corporation|Corp\.?|Company|Co\.|& Co\.?|plc|PLC|Ltd\.?|Limited"
    r"|AG|SE|S\.A\.?|SA|N\.V\.|NV|AB|ASA|Oyj|KGaA|Holdings?|Group|& plc))+$"
)


def clean_name(name: str) -> str:
    name = re.sub(r"\s*\([^)]*\)", "", name).strip()  # "Viasat (American company)"
    return re.sub(r"\s+", " ", name)


def short_name(name: str) -> str:
    short = LEGAL_SUFFIXES.sub("", name).strip(" ,")
    short = re.sub(r"\s*&$", "", short)  # "McCormick & Company" -> "McCormick"
    if short.startswith("The ") and len(short) > 4:
        short = short[4:]
    return short


def fold_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def is_risky_name(alias: str) -> bool:
    """A name that is also an ordinary word, a short acronym (PRA, SCA, SEB) or a code (Q2, M3)."""
    if alias in STRONG_WORD_NAMES:
        return False
    if len(alias) <= 2 or (alias.isalpha() and alias.isupper() and len(alias) <= 3):
        return True
    return alias.isalpha() and zipf_frequency(alias.lower(), "en") >= COMMON_WORD_ZIPF


def derived_aliases(name: str) -> list[str]:
    full = clean_name(name)
    candidates = [full, short_name(full)]
    candidates += [fold_accents(c) for c in candidates]
    out: list[str] = []
    for alias in candidates:
        if len(alias) < 2 or alias.isdigit() or alias in DROP_ALIASES or alias in out:
            continue
        out.append(alias)
    return out


def us_exchange_lists() -> dict[str, str]:
    exchange: dict[str, str] = {}
    for ticker in stocktickers.nyse:
        if PLAIN_US.match(ticker):
            exchange.setdefault(ticker, "NYSE")
    for ticker in stocktickers.nasdaq:
        if PLAIN_US.match(ticker):
            exchange.setdefault(ticker, "NASDAQ")
    return exchange


def resolve_listing(stock: dict[str, Any], index: str, us_exchange: dict[str, str]) -> tuple[str, str] | None:
    """(symbol, exchange) for one pytickersymbols record, or None when it has no usable symbol."""
    symbol = (stock.get("symbol") or "").strip()
    if symbol in LISTING_FIXES:
        return LISTING_FIXES[symbol]
    google = [s.get("google") or "" for s in stock.get("symbols") or []]
    us_lines = [
        g.split(":", 1) for g in google
        if g.startswith(("NYSE:", "NASDAQ:")) and PLAIN_US.match(g.split(":", 1)[1])
    ]
    if index in US_INDICES and PLAIN_US.match(symbol):
        for exch, sym in us_lines:
            if sym == symbol:
                return symbol, exch
        return symbol, us_exchange.get(symbol, "US")
    if us_lines:  # a foreign company with a US listing: US posts use that ticker
        exch, sym = us_lines[0]
        return sym, exch
    if not symbol:
        return None
    parts = symbol.split(".")
    if len(parts) == 1:
        suffix = HOME_SUFFIX.get(index)
        if suffix is None:
            return None
        return f"{symbol}.{suffix}", SUFFIX_EXCHANGE[suffix]
    base, suffix = parts[0], parts[1]  # "AIR.PA.DE" is Airbus in Paris
    if suffix not in SUFFIX_EXCHANGE:
        return None
    return f"{base}.{suffix}", SUFFIX_EXCHANGE[suffix]


def build() -> list[Row]:
    rows: dict[str, Row] = {}
    us_exchange = us_exchange_lists()

    def row_for(symbol: str) -> Row:
        if symbol not in rows:
            rows[symbol] = Row(symbol)
        return rows[symbol]

    tickers = PyTickerSymbols()
    for priority, index in enumerate(INDEX_ORDER):
        for stock in tickers.get_stocks_by_index(index):
            listing = resolve_listing(stock, index, us_exchange)
            if listing is None:
                continue
            symbol, exchange = listing
            row = row_for(symbol)
            if not row.name:
                row.name = NAME_FIXES.get(symbol, clean_name(stock.get("name") or ""))
                row.exchange = exchange
                row.priority = priority
            row.add_source(f"pytickersymbols:{index}")

    for ticker, exchange in sorted(us_exchange.items()):
        row = row_for(ticker)
        row.exchange = row.exchange or exchange
        row.add_source(f"stocktickers:{exchange.lower()}")

    for hand in HAND_ROWS:
        row = row_for(hand.symbol)
        row.name = row.name or hand.name
        row.exchange = hand.exchange
        row.kind = hand.kind
        row.aliases += hand.aliases
        row.context_aliases += hand.context_aliases
        row.priority = -1  # hand rows win any contested name
        row.add_source("hand")

    # Derived aliases go through the common-word test; hand aliases are taken as written.
    for row in rows.values():
        if not row.name or ("hand" in row.sources and row.kind != "equity"):
            continue
        row.aliases += [a for a in derived_aliases(row.name) if not is_risky_name(a)]
    for symbol, aliases in [*US_HAND_ALIASES.items(), *LISTING_ALIASES.items()]:
        row = row_for(symbol)
        row.name = row.name or aliases[0]
        row.aliases += aliases
        row.priority = min(row.priority, -1)
        if aliases:
            row.add_source("hand")
    for symbol, alias in LOWERCASE_OK.items():
        row_for(symbol).context_aliases.append(alias)
    for symbol, aliases in [*US_HAND_CONTEXT_ALIASES.items(), *LISTING_CONTEXT_ALIASES.items()]:
        row = row_for(symbol)
        row.context_aliases += aliases
        row.priority = min(row.priority, -1)
        if aliases:
            row.add_source("hand")

    resolve_conflicts(rows)
    for row in rows.values():
        if not row.exchange:
            row.exchange = "US"
    return sorted(rows.values(), key=lambda r: r.symbol)


def resolve_conflicts(rows: dict[str, Row]) -> None:
    """Each alias names one symbol: the hand row, else the higher-priority index, else drop it."""
    owners: dict[str, list[Row]] = {}
    for row in rows.values():
        row.aliases = list(dict.fromkeys(a for a in row.aliases if a))
        row.context_aliases = list(
            dict.fromkeys(a for a in row.context_aliases if a and a not in row.aliases)
        )
        for alias in row.aliases + row.context_aliases:
            owners.setdefault(alias, []).append(row)
    for alias, contenders in owners.items():
        if len(contenders) < 2:
            continue
        contenders.sort(key=lambda r: (r.priority, r.symbol))
        best, second = contenders[0], contenders[1]
        keep = best if best.priority < second.priority else None
        if keep is None:
            print(f"dropped ambiguous alias {alias!r}: {[r.symbol for r in contenders]}", file=sys.stderr)
        for row in contenders:
            if row is keep:
                continue
            row.aliases = [a for a in row.aliases if a != alias]
            row.context_aliases = [a for a in row.context_aliases if a != alias]


def write(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["symbol", "name", "aliases", "context_aliases", "exchange", "kind", "source"])
        for row in rows:
            writer.writerow([
                row.symbol, row.name, "|".join(row.aliases), "|".join(row.context_aliases),
                row.exchange, row.kind, "; ".join(row.sources),
            ])


def main() -> None:
    rows = build()
    write(rows, OUT)
    named = sum(1 for r in rows if r.aliases or r.context_aliases)
    print(f"wrote {len(rows)} rows ({named} with names) to {OUT}")


if __name__ == "__main__":
    main()
