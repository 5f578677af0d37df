"""Secrets out of messages: a Redis URL as it may appear in logs, errors and answers."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit

HIDDEN = "***"
#: Parameters whose value is hidden: redis-py takes ``password=`` (and passes
#: others, such as ``ssl_password=``, on to the connection).
_SECRET_NAMES = ("password", "secret", "token")
#: What urlsplit strips from the start of a URL, as the WHATWG URL standard does.
_C0_OR_SPACE = "".join(map(chr, range(33)))
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def redact_url(url: str) -> str:
    """``url`` with its password hidden, whether in the user-info part or a ``password=`` parameter.

    The rest is shown as written. In a URL with an ``@``, all that comes after
    ``scheme://`` up to the last ``@`` is hidden but a username of plain
    characters (a password with an unencoded ``#``, ``?`` or ``/`` is read by
    urllib and redis-py as part of a path, a query or a fragment). Anything
    that cannot be read as a URL, or has an ``@`` but no ``scheme://``
    (``redis:/:pw@host``), is hidden whole: it may be a secret.
    """
    if any(c in url for c in "\t\r\n"):
        return HIDDEN  # urlsplit drops them: what it reads is not what is written
    try:
        parts = urlsplit(url)
        if "@" in url:
            return _hide_user_info(url.lstrip(_C0_OR_SPACE))
        written = url.lstrip(_C0_OR_SPACE)
        authority = ""
        if parts.netloc or written[len(parts.scheme) + 1 if parts.scheme else 0 :].startswith("//"):
            authority = f"//{parts.netloc}"
    except ValueError:
        return HIDDEN
    text = f"{parts.scheme}:{authority}" if parts.scheme else authority
    return text + _rest(parts.path, parts.query, parts.fragment)


def _hide_user_info(written: str) -> str:
    scheme, slashes, rest = written.partition("://")
    if not slashes or not _SCHEME.fullmatch(scheme):
        return HIDDEN
    user_info, _, after = rest.rpartition("@")
    if any(c in user_info for c in "#?/"):
        shown = HIDDEN
    elif ":" in user_info:
        shown = f"{user_info.partition(':')[0]}:{HIDDEN}"
    else:
        shown = user_info  # a username alone
    parts = urlsplit(f"//{after}")
    return f"{scheme}://{shown}@{parts.netloc}" + _rest(parts.path, parts.query, parts.fragment)


def _rest(path: str, query: str, fragment: str) -> str:
    text = path
    if query:
        text += f"?{_hide_secrets(query)}"
    if fragment:
        text += f"#{_hide_secrets(fragment)}"
    return text


def _hide_secrets(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        if equals and any(secret in unquote_plus(name).lower() for secret in _SECRET_NAMES):
            pair = f"{name}={HIDDEN}"
        pairs.append(pair)
    return "&".join(pairs)
