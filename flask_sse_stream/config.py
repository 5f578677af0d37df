"""The configuration keys, their defaults (here and only here) and their checks.

``docs/config.rst`` describes each key; ``docs/conf.py`` checks that it lists
exactly these keys with these defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from .event import check_event_name, check_retry, show
from .redact import redact_url

#: Every configuration key with its default. ``docs/config.rst`` mirrors it.
DEFAULTS: dict[str, Any] = {
    "SSE_URL_PREFIX": "/stream",
    "SSE_REDIS_URL": None,
    "SSE_KEEPALIVE": 15,
    "SSE_RETRY": None,
    "SSE_MAX_HISTORY": 1000,
    "SSE_HISTORY_TTL": None,
    "SSE_QUEUE_SIZE": 1024,
    "SSE_MAX_CONNECTIONS": 10000,
    "SSE_CORS_ORIGINS": None,
    "SSE_RESET_EVENT": "sse-reset",
    "SSE_REDIS_PREFIX": "sse",
    "SSE_DIRECT_WRITES": True,
    "SSE_PUBLISH_TOKEN": None,
    "SSE_TOMBSTONE_TTL": 86400,
    "SSE_REDIS_SUBSCRIBE": "channels",
    "SSE_REDIS_CLUSTER": False,
    "SSE_MAX_STREAM_AGE": None,
    "SSE_COUNT_INTERVAL": 1.0,
    "SSE_MAX_CONNECTIONS_PER_CLIENT": None,
    "SSE_LOG_INTERVAL": 60,
    "SSE_PUBLISH_TIMEOUT": 10,
    "SSE_METRICS": True,
    "SSE_METRICS_CHANNELS": 20,
    "SSE_RECONNECT_SPREAD": 5,
    "SSE_CLIENT_IPV6_PREFIX": 64,
    "SSE_MAX_EVENT_BYTES": 4 * 1024 * 1024,
    "SSE_MAX_HISTORY_BYTES": 16 * 1024 * 1024,
}

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

#: ``None``, ``"*"``, or the origins allowed to open a stream from another origin.
CorsOrigins = str | tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Settings:
    """The checked configuration of one app, read once by ``init_app``."""

    url_prefix: str
    #: Not in the repr: it may hold the Redis password.
    redis_url: str | None = field(repr=False)
    keepalive: float
    retry: int | None
    max_history: int
    history_ttl: float | None
    queue_size: int
    max_connections: int
    cors_origins: CorsOrigins
    reset_event: str
    redis_prefix: str
    direct_writes: bool
    #: The bearer token of the publish and stats endpoints; ``None``: no endpoints.
    publish_token: str | None = field(repr=False)
    #: Seconds a channel's last id is remembered after its store expired (with ``history_ttl``).
    tombstone_ttl: float = 86400.0
    #: What each process subscribes to with Redis: the ``channels`` it serves, or the whole ``app``.
    redis_subscribe: str = "channels"
    #: ``SSE_REDIS_URL`` names a node of a Redis Cluster.
    redis_cluster: bool = False
    #: Seconds after which every stream ends (its client reconnects and is authorized again); ``None``: never.
    max_stream_age: float | None = None
    #: With Redis: seconds between two writes of this process's stream counts.
    count_interval: float = 1.0
    #: Open streams one client address may hold in this process; ``None``: no such limit.
    max_connections_per_client: int | None = None
    #: Seconds between two log lines of the same kind of refusal.
    log_interval: float = 60.0
    #: Seconds the publish endpoint waits for a request body.
    publish_timeout: float = 10.0
    #: Prometheus metrics: ``True`` (prometheus_client's default registry, if installed),
    #: ``False``, or a ``CollectorRegistry``.
    metrics: object = True
    #: Channels named in the per-channel metrics; the others are summed.
    metrics_channels: int = 20
    #: Seconds over which the clients of streams ended for a planned reason come back; 0: off.
    reconnect_spread: float = 5.0
    #: IPv6 clients are one client per prefix of this many bits (SSE_MAX_CONNECTIONS_PER_CLIENT).
    client_ipv6_prefix: int = 64
    #: Bytes an event may take as sent (its ``event:``, ``retry:`` and ``data:`` lines).
    max_event_bytes: int = 4 * 1024 * 1024
    #: Bytes of stored events a channel's store holds at most, each counted as ``max_event_bytes`` counts it.
    max_history_bytes: int = 16 * 1024 * 1024


#: The shortest ``SSE_PUBLISH_TOKEN`` accepted: a short secret can be guessed.
MIN_TOKEN_LENGTH = 16


def option_name(key: str) -> str:
    """``SSE_QUEUE_SIZE`` -> ``queue_size``: the keyword option of a key."""
    return key[len("SSE_") :].lower()


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Check keyword options of ``SSE``/``make_sse``: names now, values at ``init_app``."""
    known = {option_name(key) for key in DEFAULTS}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r}; the options are: {', '.join(sorted(known))}")
    return dict(options)


def load(config: MutableMapping[str, Any], options: Mapping[str, Any]) -> Settings:
    """Fill ``config`` with the defaults (keyword options replace them) and check it.

    A key already in ``config`` wins over a keyword option, so a deployment can
    change a setting without a code change. Raises :class:`ValueError` or
    :class:`TypeError` naming the key, the bad value and what is accepted.
    """
    values = {}
    for key, default in DEFAULTS.items():
        values[option_name(key)] = config.setdefault(key, options.get(option_name(key), default))
    settings = Settings(
        url_prefix=_url_prefix(values["url_prefix"]),
        redis_url=_redis_url(values["redis_url"]),
        keepalive=_positive_number("SSE_KEEPALIVE", values["keepalive"]),
        retry=None if values["retry"] is None else check_retry(values["retry"], "SSE_RETRY"),
        max_history=_int_at_least("SSE_MAX_HISTORY", values["max_history"], 0),
        history_ttl=None
        if values["history_ttl"] is None
        else _positive_number("SSE_HISTORY_TTL", values["history_ttl"]),
        queue_size=_int_at_least("SSE_QUEUE_SIZE", values["queue_size"], 1),
        max_connections=_int_at_least("SSE_MAX_CONNECTIONS", values["max_connections"], 1),
        cors_origins=cors_origins("SSE_CORS_ORIGINS", values["cors_origins"]),
        reset_event=check_event_name(values["reset_event"], "SSE_RESET_EVENT"),
        redis_prefix=_redis_prefix(values["redis_prefix"]),
        direct_writes=_bool("SSE_DIRECT_WRITES", values["direct_writes"]),
        publish_token=_publish_token(values["publish_token"]),
        tombstone_ttl=_positive_number("SSE_TOMBSTONE_TTL", values["tombstone_ttl"]),
        redis_subscribe=_one_of("SSE_REDIS_SUBSCRIBE", values["redis_subscribe"], ("channels", "app")),
        redis_cluster=_bool("SSE_REDIS_CLUSTER", values["redis_cluster"]),
        max_stream_age=None
        if values["max_stream_age"] is None
        else _positive_number("SSE_MAX_STREAM_AGE", values["max_stream_age"]),
        count_interval=_positive_number("SSE_COUNT_INTERVAL", values["count_interval"]),
        max_connections_per_client=None
        if values["max_connections_per_client"] is None
        else _int_at_least("SSE_MAX_CONNECTIONS_PER_CLIENT", values["max_connections_per_client"], 1),
        log_interval=_seconds_or_zero("SSE_LOG_INTERVAL", values["log_interval"]),
        publish_timeout=_positive_number("SSE_PUBLISH_TIMEOUT", values["publish_timeout"]),
        metrics=_metrics(values["metrics"]),
        metrics_channels=_int_at_least("SSE_METRICS_CHANNELS", values["metrics_channels"], 0),
        reconnect_spread=_seconds_or_zero("SSE_RECONNECT_SPREAD", values["reconnect_spread"]),
        client_ipv6_prefix=_ipv6_prefix(values["client_ipv6_prefix"]),
        max_event_bytes=_int_at_least("SSE_MAX_EVENT_BYTES", values["max_event_bytes"], 64),
        max_history_bytes=_int_at_least("SSE_MAX_HISTORY_BYTES", values["max_history_bytes"], 64),
    )
    config["SSE_URL_PREFIX"] = settings.url_prefix  # the path as served: "/events/" is "/events"
    return settings


def cors_origins(key: str, value: Any) -> CorsOrigins:
    """``None``, ``"*"``, or a list of origins such as ``"https://example.com"``.

    An origin is compared exactly with the browser's ``Origin`` header, so one
    written otherwise (a path, upper case, the default port) would never
    match: it is refused.
    """
    if value is None or value == "*":
        return value  # type: ignore[no-any-return]
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise TypeError(f'{key} must be None, "*" or a list of origins like "https://example.com", got {show(value)}')
    for origin in value:
        if not _is_origin(origin):
            raise ValueError(
                f'{key} must list origins as "scheme://host[:port]", as a browser sends them in its Origin header:'
                f" lower case, without a path, a query or the scheme's default port; got {show(origin)}"
            )
    return tuple(value)


#: An origin as a browser serializes it (WHATWG URL, "origin"): scheme, host, and a port only if not the default.
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://(?:\[[0-9a-f:.]+\]|[a-z0-9._~!$&'()*+,;=%-]+)(:[1-9][0-9]{0,4})?")
_DEFAULT_PORTS = {"http": ":80", "https": ":443", "ws": ":80", "wss": ":443"}


def _is_origin(value: Any) -> bool:
    match = _ORIGIN.fullmatch(value) if isinstance(value, str) else None
    return match is not None and match.group(1) != _DEFAULT_PORTS.get(value.partition(":")[0], "")


def _positive_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{key} must be a positive number of seconds, got {show(value)}")
    return float(value)


def _seconds_or_zero(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"{key} must be a number of seconds, 0 or more, got {show(value)}")
    return float(value)


def _metrics(value: Any) -> object:
    if isinstance(value, bool) or callable(getattr(value, "register", None)):
        return value
    raise TypeError(
        "SSE_METRICS must be True (prometheus_client's default registry, when prometheus_client is installed),"
        f" False, or a prometheus_client.CollectorRegistry, got {show(value)}"
    )


def _int_at_least(key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{key} must be an int of at least {low}, got {show(value)}")
    return value


def _ipv6_prefix(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 128:
        raise ValueError(
            f"SSE_CLIENT_IPV6_PREFIX must be an int from 1 to 128 (bits of an IPv6 address that name"
            f" one client; 64 for a /64), got {show(value)}"
        )
    return value


def _one_of(key: str, value: Any, accepted: tuple[str, ...]) -> str:
    if value not in accepted:
        raise ValueError(f"{key} must be one of {', '.join(map(repr, accepted))}, got {show(value)}")
    return value  # type: ignore[no-any-return]


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{key} must be True or False, got {show(value)}")
    return value


def _url_prefix(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f'SSE_URL_PREFIX must be a path starting with "/", such as "/stream", got {show(value)}')
    return value.rstrip("/") or "/"


def _redis_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(_REDIS_SCHEMES):
        got = show(redact_url(value)) if isinstance(value, str) else f"a {type(value).__name__}"
        raise ValueError(
            f"SSE_REDIS_URL must be None (in-process store) or a URL starting with"
            f" {', '.join(_REDIS_SCHEMES)}, got {got}"
        )
    rest = value.partition("://")[2]
    split_at = min((rest.find(c) for c in "/?#" if c in rest), default=len(rest))
    if "@" in rest[split_at:]:
        # redis-py (and urllib) would read the user-info as a path, a query or a
        # fragment, and connect to another host, without the password.
        raise ValueError(
            "SSE_REDIS_URL has an '@' after a '/', '?' or '#': a password (or username) with one of these"
            " characters must be percent-encoded ('/' as %2F, '?' as %3F, '#' as %23, '@' as %40;"
            f" urllib.parse.quote(password, safe='')), got {show(redact_url(value))}"
        )
    return value


def _redis_prefix(value: Any) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in " \r\n\x00"):
        raise ValueError(f"SSE_REDIS_PREFIX must be a non-empty str without spaces or line breaks, got {show(value)}")
    return value


def _publish_token(value: Any) -> str | None:
    # The message never shows the value: it is a secret, and logs keep errors.
    accepted = (
        f"SSE_PUBLISH_TOKEN must be None (no publish endpoint) or a str of at least {MIN_TOKEN_LENGTH}"
        " visible ASCII characters (no spaces), such as secrets.token_urlsafe(32)"
    )
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{accepted}, got a {type(value).__name__}")
    if len(value) < MIN_TOKEN_LENGTH:
        raise ValueError(f"{accepted}, got a str of {len(value)} characters")
    if not all("!" <= c <= "~" for c in value):
        raise ValueError(f"{accepted}, got a str with a space, a control or a non-ASCII character")
    return value
