"""Secrets out of messages: a Redis URL as it may appear in logs, errors and answers."""

from __future__ import annotations

from urllib.parse import unquote_plus, urlsplit

HIDDEN = "***"
#: Parameters whose value is hidden: redis-py takes ``password=`` (and passes
#: others, such as ``ssl_password=``, on to the connection).
_SECRET_NAMES = ("password", "secret", "token")
#: What urlsplit strips from the start of a URL, as the WHATWG URL standard does.
_C0_OR_SPACE = "".join(map(chr, range(33)))


def redact_url(url: str) -> str:
    """``url`` with its password hidden, whether in the user-info part or a ``password=`` parameter.

    The rest is shown as written. Anything that cannot be read as a URL, or
    has an ``@`` outside a host part (``redis:/:pw@host``), is hidden whole:
    it may be a secret.
    """
    if any(c in url for c in "\t\r\n"):
        return HIDDEN  # urlsplit drops them: what it reads is not what is written
    try:
        parts = urlsplit(url)
        if "@" in parts.path:
            return HIDDEN
        written = url.lstrip(_C0_OR_SPACE)
        authority = ""
        if parts.netloc or written[len(parts.scheme) + 1 if parts.scheme else 0 :].startswith("//"):
            netloc = parts.netloc
            if parts.password is not None:
                netloc = f"{parts.username or ''}:{HIDDEN}@{netloc.rpartition('@')[2]}"
            authority = f"//{netloc}"
    except ValueError:
        return HIDDEN
    text = f"{parts.scheme}:{authority}" if parts.scheme else authority
    text += parts.path
    if parts.query:
        text += f"?{_hide_secrets(parts.query)}"
    if parts.fragment:
        text += f"#{_hide_secrets(parts.fragment)}"
    return text


def _hide_secrets(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        if equals and any(secret in unquote_plus(name).lower() for secret in _SECRET_NAMES):
            pair = f"{name}={HIDDEN}"
        pairs.append(pair)
    return "&".join(pairs)
