"""Reddit: new posts and comments of configured subreddits over the OAuth2 API.

Written from Reddit's public API documentation (https://www.reddit.com/dev/api, the OAuth2 wiki
page and the API rules), not checked against the live service from here:

- Token: POST https://www.reddit.com/api/v1/access_token with HTTP Basic auth (client id and
  secret) and a form body `grant_type=client_credentials`, or `grant_type=password&username=&
  password=` for a script app acting as its developer. The answer is JSON
  `{"access_token", "token_type": "bearer", "expires_in", "scope"}`; a wrong password comes back
  as HTTP 200 with `{"error": "invalid_grant"}`, wrong app credentials as 401.
- Listings: GET https://oauth.reddit.com/r/{sub}/new and /r/{sub}/comments with `limit` (<= 100),
  `after`/`before` (fullnames such as `t3_abc`) and `raw_json=1` (no HTML-escaping of text). The
  body is `{"kind": "Listing", "data": {"after", "before", "children": [{"kind": "t3"|"t1",
  "data": {...}}]}}`, newest first.
- Rate limits: every API answer carries X-Ratelimit-Used, X-Ratelimit-Remaining (requests left,
  a float) and X-Ratelimit-Reset (seconds until the window ends); over it, HTTP 429.

Paging: each poll reads the newest page and, when none of it was seen before, pages back with
`after` until it meets something seen (or older than the newest post seen), so a busy hour is
caught up and nothing is skipped. `before=<newest fullname>` would be one request cheaper, but
Reddit answers an empty listing forever once that anchor post is removed, which would silently
stop the connector; the seen-id set makes the newest-page read just as exact.

Checkpoint per listing: the newest fullname and its creation time, plus a bounded list of the
fullnames already emitted, saved only after the bus acknowledged them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from moodwire.connector_settings import RedditSettings
from moodwire.schema import format_timestamp

from ingest.polling import MAX_POLL_BACKOFF_S, Backoff, PollingSource, ResetFormat
from ingest.sources import RawItem, digest_key, dump_json

log = logging.getLogger(__name__)

SOURCE = "reddit"
# Far more than one poll can page through (10 pages x 100), so a restart never re-emits.
SEEN_PER_LISTING = 3_000
# Text of posts and comments whose content is gone: nothing to score.
_GONE = {"[deleted]", "[removed]"}


@dataclass
class _Listing:
    subreddit: str
    kind: str  # "new" | "comments"
    interval_s: float
    newest: str | None = None
    newest_created: float | None = None
    seen: dict[str, None] = field(default_factory=dict)
    next_poll: float = 0.0
    failures: int = 0

    @property
    def key(self) -> str:
        return f"r/{self.subreddit}/{self.kind}"


class RedditSource(PollingSource[_Listing]):
    name = SOURCE
    reset_format = ResetFormat.SECONDS

    def __init__(
        self,
        settings: RedditSettings,
        state: dict[str, Any] | None = None,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        saved = (state or {}).get("listings", {})
        listings: list[_Listing] = []
        for subreddit in settings.subreddits:
            for kind in settings.listings:
                listing = _Listing(subreddit, kind, settings.interval_s)
                previous = saved.get(listing.key, {})
                listing.newest = previous.get("newest")
                listing.newest_created = previous.get("newest_created")
                listing.seen = dict.fromkeys(previous.get("seen", []))
                listings.append(listing)
        # Rate limits are per OAuth client, so the source-wide pause covers every listing.
        super().__init__(listings, client or httpx.Client(timeout=settings.timeout_s), clock=clock, sleep=sleep)
        self._settings = settings
        self._token: str | None = None
        self._token_expires = 0.0
        self._auth_failures = 0

    def checkpoint(self) -> dict[str, Any]:
        return {
            "listings": {
                listing.key: {
                    "newest": listing.newest,
                    "newest_created": listing.newest_created,
                    "seen": list(listing.seen)[-SEEN_PER_LISTING:],
                }
                for listing in self._targets
            }
        }

    # -- one listing ---------------------------------------------------------------------------

    def poll(self, listing: _Listing) -> list[RawItem]:
        """Everything new in one listing, oldest first; nothing (and no state change) on failure."""
        first_run = listing.newest is None and not listing.seen
        pages = self._settings.initial_pages if first_run else self._settings.max_pages
        if pages == 0:
            # First start told not to look back: only remember where "now" is.
            pages, remember_only = 1, True
        else:
            remember_only = False
        fresh: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(pages):
            listing_data = self._get_listing(listing, after)
            if listing_data is None:
                return []
            children = listing_data.get("children")
            if not isinstance(children, list):
                self.fail(listing, "listing without children")
                return []
            met_known = False
            for child in children:
                key = _child_key(child)
                created = _created(child)
                if key in listing.seen:
                    met_known = True
                    continue
                if (
                    listing.newest_created is not None
                    and created is not None
                    and created < listing.newest_created
                ):
                    # Older than the newest post already emitted: we have paged back far enough.
                    met_known = True
                fresh.append(child)
            after = listing_data.get("after")
            if met_known or not after or not children:
                break
        else:
            if not first_run:
                log.warning(
                    "reddit %s: more than %d pages new since the last poll; older ones are skipped "
                    "(poll more often)",
                    listing.key,
                    pages,
                )
        self.succeeded(listing)
        items: list[RawItem] = []
        # Listings are newest first; the bus gets publication order.
        for child in reversed(fresh):
            key = _child_key(child)
            listing.seen[key] = None
            created = _created(child)
            if created is not None and (listing.newest_created is None or created >= listing.newest_created):
                listing.newest_created = created
                listing.newest = key
            if not remember_only:
                item = child_to_item(child)
                if item is not None:
                    items.append(item)
        while len(listing.seen) > SEEN_PER_LISTING:
            del listing.seen[next(iter(listing.seen))]
        return items

    def _get_listing(self, listing: _Listing, after: str | None) -> dict[str, Any] | None:
        if self.paused:
            # The last page used up the window: stop here and redo this poll after the reset.
            return None
        token = self._bearer(listing)
        if token is None:
            return None
        params: dict[str, str | int] = {"limit": self._settings.page_limit, "raw_json": 1}
        if after:
            params["after"] = after
        url = f"{self._settings.api_base}/r/{listing.subreddit}/{listing.kind}"
        try:
            response = self._client.get(
                url,
                params=params,
                headers={"Authorization": f"bearer {token}", "User-Agent": self._settings.user_agent},
            )
        except httpx.HTTPError as exc:
            self.fail(listing, f"request failed: {exc}")
            return None
        if not self.answered(listing, response):
            return None
        if response.status_code == 401:
            # Expired or revoked before its time: fetch a new token on the next try.
            self._token = None
            self.fail(listing, "HTTP 401 (token refused)")
            return None
        if response.status_code != 200:
            # 403/404: a private, quarantined or banned subreddit; 5xx: Reddit is struggling.
            self.fail(listing, f"HTTP {response.status_code}")
            return None
        try:
            body = response.json()
            data = body["data"]
            if not isinstance(data, dict):
                raise TypeError("data is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            self.fail(listing, f"not a listing: {exc}")
            return None
        return data

    # -- auth ----------------------------------------------------------------------------------

    def _bearer(self, listing: _Listing) -> str | None:
        if self._token is not None and self._clock() < self._token_expires:
            return self._token
        settings = self._settings
        form = {"grant_type": "client_credentials"}
        if settings.username is not None and settings.password is not None:
            form = {
                "grant_type": "password",
                "username": settings.username,
                "password": settings.password.get_secret_value(),
            }
        try:
            response = self._client.post(
                settings.token_url,
                data=form,
                auth=(settings.client_id, settings.client_secret.get_secret_value()),
                headers={"User-Agent": settings.user_agent},
            )
        except httpx.HTTPError as exc:
            self.pause(self._token_backoff(), f"token request failed: {exc}")
            return None
        if not self.answered(listing, response):
            return None
        if response.status_code in (400, 401, 403):
            self._refused(f"HTTP {response.status_code}")
            return None
        if response.status_code != 200:
            self.pause(self._token_backoff(), f"token endpoint answered HTTP {response.status_code}")
            return None
        try:
            body = response.json()
        except ValueError:
            self.pause(self._token_backoff(), "token endpoint answered something that is not JSON")
            return None
        if not isinstance(body, dict) or "error" in body or not body.get("access_token"):
            self._refused(
                str(body.get("error", "no access_token") if isinstance(body, dict) else "bad answer")
            )
            return None
        self._token = str(body["access_token"])
        # Renew a minute early so no request goes out with a token about to expire.
        expires_in = _float(body.get("expires_in")) or 3600.0
        self._token_expires = self._clock() + max(60.0, expires_in - 60.0)
        self._auth_failures = 0
        return self._token

    def _refused(self, why: str) -> None:
        # Wrong credentials do not fix themselves quickly, but stopping the whole ingest service
        # for one connector would be worse: say so loudly and try again much later.
        log.error("reddit: the token endpoint refused the app credentials (%s); check [reddit] settings", why)
        self.pause(MAX_POLL_BACKOFF_S, "credentials refused")

    def _token_backoff(self) -> float:
        # The token is the app's, not a listing's: its failures pause the whole source.
        self._auth_failures += 1
        return Backoff(self._settings.interval_s, MAX_POLL_BACKOFF_S).delay(self._auth_failures)


# -- mapping ---------------------------------------------------------------------------------


def _child_key(child: Any) -> str:
    """The fullname, or a digest of the raw child for one too broken to have one."""
    if isinstance(child, dict) and isinstance(child.get("data"), dict):
        name = child["data"].get("name")
        if isinstance(name, str) and name:
            return name
    return digest_key(child)


def _created(child: Any) -> float | None:
    if isinstance(child, dict) and isinstance(child.get("data"), dict):
        return _float(child["data"].get("created_utc"))
    return None


def child_to_item(child: Any) -> RawItem | None:
    """One listing child -> a RawItem; None for posts whose content is gone."""
    raw = dump_json(child)
    if (
        not isinstance(child, dict)
        or child.get("kind") not in ("t1", "t3")
        or not isinstance(child.get("data"), dict)
    ):
        return RawItem(SOURCE, None, raw=raw, error="reddit: not a post or comment (kind t3/t1)")
    data = child["data"]
    name = data.get("name")
    created = _float(data.get("created_utc"))
    if not isinstance(name, str) or not name:
        return RawItem(SOURCE, None, raw=raw, error="reddit: item without a fullname")
    if created is None:
        return RawItem(SOURCE, None, raw=raw, error=f"reddit: {name} without created_utc")
    if child["kind"] == "t3":
        title = str(data.get("title") or "").strip()
        body = str(data.get("selftext") or "").strip()
        text = title if not body or body in _GONE else f"{title}. {body}"
    else:
        text = str(data.get("body") or "").strip()
        if text in _GONE:
            return None
    try:
        published = format_timestamp(datetime.fromtimestamp(created, UTC))
    except (OverflowError, OSError, ValueError):
        return RawItem(SOURCE, None, raw=raw, error=f"reddit: {name} has an impossible created_utc")
    post: dict[str, Any] = {
        "id": f"reddit:{name}",
        "source": SOURCE,
        "text": text,
        "published_at": published,
        "kind": "post",
    }
    author = data.get("author")
    if isinstance(author, str) and author not in _GONE:
        post["author"] = author
    permalink = data.get("permalink")
    if isinstance(permalink, str) and permalink.startswith("/"):
        post["url"] = "https://www.reddit.com" + permalink
    return RawItem(SOURCE, post, raw=raw)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN is no number

