"""Who may ask what of the service, and how often (plain Python; ``service.http`` applies it).

* :class:`Access`: the bearer token (``--token`` / ``$SPARSEARCH_TOKEN``) that write endpoints and
  any admin action require (and, with ``token_for_reads``, every read endpoint too), and the
  ``Host`` header names the service answers to (a DNS-rebinding page sends its own name).
  Tokens are compared in constant time.
* :class:`RateLimiter`: a token bucket per client address (``Limits.rate_limit_per_s`` refill,
  ``Limits.rate_limit_burst`` capacity), over a bounded table of clients.
* :class:`Gate`: a cap on operations in flight (searches, writes): past it a request is
  refused at once (429 with ``Retry-After``) instead of queueing without bound.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ..errors import InvalidInputError

__all__ = ["Access", "RateLimiter", "Gate", "DEFAULT_ALLOWED_HOSTS", "WILDCARD_BINDS", "host_name"]

#: Host names answered by default: the loopback names (the bound host is added by ``serve``)
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
#: bind addresses that are no host name a client would send
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def host_name(host_header: str | None) -> str | None:
    """The host name of a ``Host`` header, lower case, without port or IPv6 brackets (None when
    absent or malformed)."""
    if not host_header:
        return None
    h = host_header.strip().lower()
    if h.count(":") > 1 and not h.startswith("["):  # a bare IPv6 address (as configured)
        return h
    if h.startswith("["):  # [v6]:port
        end = h.find("]")
        if end < 0 or (h[end + 1:] and not h[end + 1:].startswith(":")):
            return None
        return h[1:end] or None
    name, _, port = h.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


@dataclass(frozen=True)
class Access:
    """Access settings of the HTTP service.

    ``token``: the bearer token writes and admin actions require (None: they are disabled,
    403). ``token_for_reads``: reads require it too (the web page asks for it). ``allowed_hosts``:
    names the ``Host`` header may carry (``"*"`` allows any, ``"*.example.org"`` a domain's
    subdomains); anything else is refused (400), which stops DNS rebinding.
    """

    token: str | None = field(default=None, repr=False)
    token_for_reads: bool = False
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < 8:
            raise InvalidInputError("the service token must be at least 8 characters long")
        if self.token_for_reads and self.token is None:
            raise InvalidInputError("token_for_reads (--token-for-reads) needs a token (--token or SPARSEARCH_TOKEN)")
        hosts = tuple(dict.fromkeys(n for h in self.allowed_hosts if (n := host_name(h) if h != "*" else "*")))
        object.__setattr__(self, "allowed_hosts", hosts)

    def with_host(self, bound: str) -> "Access":
        """These settings with the bound interface ``bound`` allowed too (unless it is a wildcard)."""
        if bound in WILDCARD_BINDS or host_name(bound) in self.allowed_hosts:
            return self
        return Access(self.token, self.token_for_reads, self.allowed_hosts + (bound,))

    def host_allowed(self, host_header: str | None) -> bool:
        if "*" in self.allowed_hosts:
            return True
        name = host_name(host_header)
        if name is None:
            return False
        return any(name == h or (h.startswith("*.") and name.endswith(h[1:])) for h in self.allowed_hosts)

    def token_ok(self, authorization: str | None) -> bool:
        """Whether an ``Authorization: Bearer <token>`` header carries the token (constant time)."""
        if self.token is None or not authorization:
            return False
        scheme, _, given = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self.token.encode("utf-8"))


class RateLimiter:
    """Token buckets keyed by client: ``rate`` tokens a second, at most ``burst`` saved up. The
    table keeps the ``max_clients`` most recently seen clients (an evicted one starts full)."""

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000) -> None:
        if not rate > 0 or not burst >= 1:
            raise InvalidInputError(f"rate limit needs rate > 0 and burst >= 1, got {rate} and {burst}")
        self.rate, self.burst, self.max_clients = float(rate), float(burst), max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str, now: float | None = None) -> float:
        """Spend one token of ``client``: 0.0 when allowed, else the seconds until one is there."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[client] = (tokens - 1 if wait == 0.0 else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        """``Retry-After`` value (whole seconds, at least 1) for a wait."""
        return str(max(1, math.ceil(wait)))


class Gate:
    """At most ``cap`` operations in flight (``cap`` 0: no cap); :meth:`enter` says whether one
    more may start, :meth:`leave` ends one."""

    def __init__(self, cap: int) -> None:
        self.cap, self.inflight, self._lock = cap, 0, threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.cap and self.inflight >= self.cap:
                return False
            self.inflight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.inflight -= 1
