"""A client of Scrive's API, for reconciliation (SPEC 13): what Scrive says a flow instance
or a document is now.

Personal access credentials from the settings, sent as OAuth 1.0 PLAINTEXT (which signs
nothing: use HTTPS). Requests are spaced to at most `scrive_rate` a second; a 429 waits
for its `Retry-After`; a 5xx, a timeout or a broken connection is retried with backoff,
at most `RETRIES` times. A 401 or 403 raises `ScriveRefused`, naming the settings to check.
No credential is ever part of a message, a log line or a repr.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx2 as httpx

from flowtracker import __version__
from flowtracker.engine.events import Kind
from flowtracker.errors import ScriveAPIError, ScriveRefused
from flowtracker.settings import SCRIVE_CREDENTIALS, Settings

log = logging.getLogger("flowtracker")

RETRIES = 3  # of a 5xx or a timeout, after the first attempt
BACKOFF_SECONDS = (1.0, 4.0, 16.0)  # before each retry, with up to a fifth of jitter
MAX_RATE_LIMITED = 10  # 429s in a row for one request before giving up on it
MAX_RETRY_AFTER_SECONDS = 600.0  # a longer Retry-After is waited this long at most
ERROR_BODY = 200  # characters of an error answer's body quoted in a message
# Where a credential is set, by setting: what messages name (never the value).
CREDENTIAL_VARIABLES = {
    "scrive_api_token": "FLOWTRACKER_SCRIVE_API_TOKEN",
    "scrive_api_secret": "FLOWTRACKER_SCRIVE_API_SECRET",
    "scrive_access_token": "FLOWTRACKER_SCRIVE_ACCESS_TOKEN",
    "scrive_access_secret": "FLOWTRACKER_SCRIVE_ACCESS_SECRET",
}


@dataclass(frozen=True, slots=True)
class Answer:
    """What Scrive's API answered for one subject: its JSON (found) or 404 (not found)."""

    found: bool
    body: Any = None


@dataclass(frozen=True, slots=True)
class _Problem:
    """Why an attempt gave no answer, and whether another attempt may."""

    message: str
    retry: bool = True


class Credentials:
    """The four personal access credentials; the repr shows none of them."""

    __slots__ = ("_header",)

    def __init__(self, settings: Settings) -> None:
        missing = [CREDENTIAL_VARIABLES[name] for name in SCRIVE_CREDENTIALS
                   if not getattr(settings, name)]  # fmt: skip
        if missing:
            raise ScriveRefused(
                "Scrive's API needs personal access credentials (Scrive: Account settings, "
                f"API): set {', '.join(missing)}"
            )
        quoted = {name: _oauth_quote(getattr(settings, name)) for name in SCRIVE_CREDENTIALS}
        self._header = (
            'oauth_signature_method="PLAINTEXT", '
            f'oauth_consumer_key="{quoted["scrive_api_token"]}", '
            f'oauth_token="{quoted["scrive_access_token"]}", '
            f'oauth_signature="{quoted["scrive_api_secret"]}&{quoted["scrive_access_secret"]}"'
        )

    def header(self) -> str:
        """The `Authorization` header of every request (SPEC 13)."""
        return self._header

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"


class ScriveAPI:
    """Scrive's API at `settings.scrive_url`, spaced and retried as the module says."""

    def __init__(
        self,
        settings: Settings,
        *,
        rate: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = _base_url(settings.scrive_url)
        self.flow_path = "/" + settings.scrive_flow_path.strip("/")
        self.shown = shown_url(self.base)
        self.interval = 1.0 / (rate or settings.scrive_rate)
        self._sleep, self._clock = sleep, clock
        self._credentials = Credentials(settings)
        self._next = 0.0  # the earliest time of the next request (clock)
        self._spacing = threading.Lock()
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.scrive_timeout_seconds),
            follow_redirects=False,  # the credentials go to the URL configured, nowhere else
            headers={"user-agent": f"flowtracker/{__version__}", "accept": "application/json"},
            trust_env=True,  # a company's HTTPS proxy, as other clients of Scrive use it
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ScriveAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subject(self, kind: Kind, subject_id: str) -> Answer:
        """The flow instance or the document as Scrive has it now."""
        if kind == "flow":
            return self.get(f"{self.flow_path}/instances/{quote(subject_id, safe='')}")
        return self.get(f"/api/v2/documents/{quote(subject_id, safe='')}/get")

    def get(self, path: str) -> Answer:
        """GET `path`: its JSON, or not found (404); raises `ScriveRefused` on 401/403
        and `ScriveAPIError` when no attempt gave an answer."""
        failures = rate_limited = 0
        while True:
            self._wait_turn()
            try:
                response = self._client.get(
                    self.base + path, headers={"authorization": self._credentials.header()}
                )
            except httpx.HTTPError as error:
                outcome: Answer | _Problem = _Problem(_transport_problem(error))
            else:
                if response.status_code == 429 and rate_limited < MAX_RATE_LIMITED:
                    rate_limited += 1
                    wait = retry_after(response.headers.get("retry-after"), self.interval)
                    log.info("Scrive's API asked to wait %.1f s (429) before %s", wait, path)
                    self._sleep(wait)
                    continue
                outcome = self._answer(path, response)
            if isinstance(outcome, Answer):
                return outcome
            if failures == RETRIES or not outcome.retry:
                raise ScriveAPIError(outcome.message, {"path": path})
            wait = BACKOFF_SECONDS[failures] * (1 + random.uniform(0, 0.2))  # noqa: S311
            failures += 1
            log.info("Scrive's API: %s; retry %d of %d in %.1f s",
                     outcome.message, failures, RETRIES, wait)  # fmt: skip
            self._sleep(wait)

    def _answer(self, path: str, response: httpx.Response) -> Answer | _Problem:
        status, where = response.status_code, f"{self.shown}{path}"
        if status == 404:
            return Answer(found=False)
        if status in (401, 403):
            raise ScriveRefused(_refused(status, self.shown), {"path": path, "status": status})
        if status >= 500 or status == 429:
            return _Problem(f"{where} answered {status}")
        if status != 200:
            return _Problem(f"{where} answered {status}: {_excerpt(response.text)}", retry=False)
        try:
            return Answer(found=True, body=json.loads(response.content))
        except ValueError:
            return _Problem(f"{where} answered 200 with a body that is not JSON", retry=False)

    def _wait_turn(self) -> None:
        """At most one request per `interval`, across threads."""
        with self._spacing:
            now = self._clock()
            if self._next > now:
                self._sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


def retry_after(value: str | None, default: float) -> float:
    """The seconds a `Retry-After` header asks for (seconds or an HTTP date), bounded."""
    seconds: float | None = None
    if value is not None:
        value = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", value):
            seconds = float(value)
        else:
            with_date = email.utils.parsedate_to_datetime(value) if value else None
            if with_date is not None:
                seconds = with_date.timestamp() - time.time()
    if seconds is None:
        seconds = default
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def shown_url(url: str) -> str:
    """A URL as messages show it: any user and password in it masked."""
    return re.sub(r"(://)[^/@]*@", r"\1***@", url)


def _base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ScriveAPIError(
            f"FLOWTRACKER_SCRIVE_URL must be an http:// or https:// URL, not {shown_url(url)!r}"
        )
    return url.rstrip("/")


def _refused(status: int, shown: str) -> str:
    variables = ", ".join(CREDENTIAL_VARIABLES.values())
    if status == 401:
        return (
            f"Scrive's API at {shown} refused the credentials (401): check {variables} "
            "(personal access credentials of a Scrive user, and FLOWTRACKER_SCRIVE_URL "
            "for that user's Scrive)"
        )
    return (
        f"Scrive's API at {shown} refused access (403): the user of "
        "FLOWTRACKER_SCRIVE_ACCESS_TOKEN may not read these flows and documents; check "
        f"{variables}"
    )


def _transport_problem(error: httpx.HTTPError) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "no answer within the timeout (FLOWTRACKER_SCRIVE_TIMEOUT)"
    reason = type(error).__name__
    return f"cannot reach Scrive's API ({reason}: {_excerpt(str(error))})"


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_BODY else text[:ERROR_BODY] + "..."


def _oauth_quote(value: str) -> str:
    """RFC 5849 percent-encoding of a header parameter."""
    return quote(value, safe="-._~")
