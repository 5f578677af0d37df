"""A small app whose view sends an event: the example of docs/testing.rst."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, request, session

from flask_sse_stream import SSE


def create_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="dev", **config)
    sse = SSE(app)

    @sse.authorize
    def may_listen(channel: str) -> bool:
        return channel == "news" or channel == f"user-{session.get('user')}"

    @app.post("/login")
    def login() -> tuple[str, int]:
        session["user"] = request.form["user"]
        return "", 204

    @app.post("/news")
    def news() -> dict[str, Any]:
        sent = current_app.sse.send_new_event(
            data={"text": request.form["text"]}, event="news", id=True, channel="news"
        )
        return {"id": sent}

    return app
