"""Secrets out of messages: a Redis URL as it may appear in logs, errors and answers."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HIDDEN = "***"


def redact_url(url: str) -> str:
    """``url`` with its password hidden, whether in the user-info part or a ``password=`` parameter.

    Anything that cannot be read as a URL is hidden whole: it may be a secret.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            netloc = f"{user}:{HIDDEN}@{netloc.rpartition('@')[2]}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(key, HIDDEN if key.lower() == "password" else value) for key, value in pairs], safe="*")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return HIDDEN
