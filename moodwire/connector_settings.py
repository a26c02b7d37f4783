"""Settings of the social and push connectors: one frozen model per connector, secrets as SecretStr.

`moodwire.config.Settings` holds each as an optional field (`reddit`, `mastodon`, `bluesky`,
`stocktwits`, `push`); a connector runs only when its section is present. In TOML that is a
`[reddit]` table; in the environment `MOODWIRE_REDDIT__CLIENT_ID=...` (the `__` nesting delimiter).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from moodwire.schema import SYMBOL_RE

Listing = Literal["new", "comments"]
REDDIT_LISTINGS: tuple[Listing, ...] = ("new", "comments")
_SUBREDDIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{1,20}$")


def _http_url(value: str, schemes: tuple[str, ...] = ("http://", "https://")) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(schemes):
        raise ValueError(f"must start with {' or '.join(schemes)}")
    return value


def _symbols(values: list[str]) -> list[str]:
    cleaned = []
    for value in values:
        symbol = value.strip().lstrip("$").upper()
        if not SYMBOL_RE.match(symbol):
            raise ValueError(f"not a ticker symbol: {value!r}")
        if symbol not in cleaned:
            cleaned.append(symbol)
    return cleaned


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RedditSettings(_Section):
    """A Reddit "script" or "web" app (https://www.reddit.com/prefs/apps).

    With `username` and `password` the token comes from the password grant (the app acts as that
    user, who must be a developer of a script app); without them from client_credentials
    (application-only access, enough for public subreddits).
    """

    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    username: str | None = None
    password: SecretStr | None = None
    # Reddit's API rules ask for a unique, descriptive User-Agent and throttle generic ones.
    user_agent: str = Field(default="python:moodwire:0.1.0 (self-hosted sentiment monitor)", min_length=8)
    subreddits: list[str] = Field(min_length=1)
    listings: list[Listing] = Field(default_factory=lambda: list(REDDIT_LISTINGS), min_length=1)
    interval_s: float = Field(default=60.0, ge=2.0, description="seconds between polls of one listing")
    page_limit: int = Field(default=100, ge=1, le=100)
    # How far back one poll may page (with `after`) to close a gap; Reddit lists at most 1,000.
    max_pages: int = Field(default=10, ge=1, le=10)
    # Pages taken on the very first start (no checkpoint): the recent past, not the whole listing.
    initial_pages: int = Field(default=1, ge=0, le=10)
    api_base: str = "https://oauth.reddit.com"
    token_url: str = "https://www.reddit.com/api/v1/access_token"
    timeout_s: float = Field(default=15.0, gt=0)

    @field_validator("subreddits")
    @classmethod
    def _subreddit_names(cls, values: list[str]) -> list[str]:
        names = []
        for value in values:
            name = value.strip().removeprefix("/").removeprefix("r/")
            if not _SUBREDDIT_RE.match(name):
                raise ValueError(f"not a subreddit name: {value!r}")
            names.append(name)
        return names

    @field_validator("api_base", "token_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        return _http_url(value)

    @model_validator(mode="after")
    def _password_pair(self) -> RedditSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError(
                "set both username and password (password grant) or neither (client_credentials)"
            )
        return self


class MastodonSettings(_Section):
    """Hashtag and public timelines of one Mastodon server, polled (REST) or streamed (SSE)."""

    base_url: str
    access_token: SecretStr | None = None
    hashtags: list[str] = Field(default_factory=list)
    public: bool = False
    # With `public`: only statuses of this server's own users (the "local" timeline).
    public_local: bool = False
    streaming: bool = False
    # Some servers serve the streaming API on another host (GET /api/v2/instance -> urls.streaming).
    streaming_url: str | None = None
    interval_s: float = Field(default=60.0, ge=2.0)
    page_limit: int = Field(default=40, ge=1, le=40)
    max_pages: int = Field(default=10, ge=1, le=100)
    timeout_s: float = Field(default=15.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("streaming_url")
    @classmethod
    def _streaming(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, ("http://", "https://", "wss://", "ws://"))

    @field_validator("hashtags")
    @classmethod
    def _tags(cls, values: list[str]) -> list[str]:
        tags = []
        for value in values:
            tag = value.strip().lstrip("#")
            if not tag or not re.fullmatch(r"\w+", tag):
                raise ValueError(f"not a hashtag: {value!r}")
            tags.append(tag)
        return tags

    @model_validator(mode="after")
    def _something_to_read(self) -> MastodonSettings:
        if not self.hashtags and not self.public:
            raise ValueError("name at least one hashtag or set public = true")
        return self


class BlueskySettings(_Section):
    """Bluesky posts from a Jetstream instance, kept when they match a keyword or a cashtag."""

    jetstream_url: str = "wss://jetstream2.us-east.bsky.network/subscribe"
    keywords: list[str] = Field(default_factory=list)
    cashtags: list[str] = Field(default_factory=list)
    # Keep every post with any cashtag ("$" + ticker-like word), not only the listed ones.
    any_cashtag: bool = False
    # Jetstream's cursors are times, not sequence numbers: resuming a little early and dropping
    # what was already seen is how its documentation suggests a gapless restart.
    rewind_s: float = Field(default=2.0, ge=0.0, le=600.0)
    batch_max: int = Field(default=500, ge=1, le=10_000)
    batch_wait_s: float = Field(default=1.0, gt=0.0, le=30.0)
    open_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("jetstream_url")
    @classmethod
    def _ws(cls, value: str) -> str:
        return _http_url(value, ("wss://", "ws://"))

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, values: list[str]) -> list[str]:
        words = [v.strip() for v in values if v.strip()]
        if len(words) != len(values):
            raise ValueError("keywords must be non-empty")
        return words

    @field_validator("cashtags")
    @classmethod
    def _cashtags(cls, values: list[str]) -> list[str]:
        return _symbols(values)

    @model_validator(mode="after")
    def _has_a_filter(self) -> BlueskySettings:
        if not self.keywords and not self.cashtags and not self.any_cashtag:
            raise ValueError("the firehose is every post on Bluesky: set keywords, cashtags or any_cashtag")
        return self


class StocktwitsSettings(_Section):
    """StockTwits symbol streams (GET /api/2/streams/symbol/{SYMBOL}.json)."""

    symbols: list[str] = Field(min_length=1)
    # Optional: the public streams answer without one, at a lower rate limit.
    access_token: SecretStr | None = None
    api_base: str = "https://api.stocktwits.com/api/2"
    interval_s: float = Field(default=120.0, ge=2.0, description="seconds between polls of one symbol")
    page_limit: int = Field(default=30, ge=1, le=30)
    max_pages: int = Field(default=5, ge=1, le=50)
    timeout_s: float = Field(default=15.0, gt=0)

    @field_validator("symbols")
    @classmethod
    def _symbol_list(cls, values: list[str]) -> list[str]:
        return _symbols(values)

    @field_validator("api_base")
    @classmethod
    def _base(cls, value: str) -> str:
        return _http_url(value)


class PushSettings(_Section):
    """The HTTP push endpoint: POST /v1/posts with a bearer token."""

    token: SecretStr = Field(min_length=16)
    # Loopback unless told otherwise: the endpoint trusts anyone holding the token.
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_000_000, ge=1_024, le=100_000_000)
    max_items_per_request: int = Field(default=1_000, ge=1, le=100_000)
    queue_size: int = Field(default=10_000, ge=1)
    # Answer 200 only once the posts are on the bus (at-least-once); a timeout answers 503 and
    # the client retries, which is safe because posts are deduplicated by id.
    wait_for_bus: bool = True
    ack_timeout_s: float = Field(default=10.0, gt=0, le=300)
