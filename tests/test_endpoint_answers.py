"""What the publish and stats endpoints answer to any method, and what exists without a token.

``docs/publishing.rst`` says every answer of the endpoints is JSON, with
``Allow`` naming the methods each serves; without ``SSE_PUBLISH_TOKEN`` the
endpoints do not exist, and the app answers as for any unknown path.
"""

from __future__ import annotations

import pytest

from tests.test_publish import AUTH, TOKEN, call

METHODS = ["TRACE", "PROPFIND", "FOO", "CONNECT"]


@pytest.mark.parametrize("prefix, base", [("/stream", "/stream"), ("/", "")])
@pytest.mark.parametrize("method", METHODS)
def test_any_other_method_on_publish_is_a_json_405_with_its_allow(make_app, serve, prefix, base, method) -> None:
    app, _ = make_app(SSE_PUBLISH_TOKEN=TOKEN, SSE_URL_PREFIX=prefix)
    answer = call(serve(app).port, f"{base}/publish", method=method, headers=AUTH)
    assert (answer.status, answer.headers["allow"]) == (405, "POST, OPTIONS")
    assert method in answer.json()["error"]


@pytest.mark.parametrize("method", METHODS)
def test_any_other_method_on_stats_is_a_json_405_with_its_allow(make_app, serve, method) -> None:
    app, _ = make_app(SSE_PUBLISH_TOKEN=TOKEN)
    answer = call(serve(app).port, "/stream/stats", method=method, headers=AUTH)
    assert (answer.status, answer.headers["allow"]) == (405, "GET, HEAD, OPTIONS")
    assert method in answer.json()["error"]


def test_head_on_publish_is_a_405_with_its_allow(make_app, serve) -> None:
    app, _ = make_app(SSE_PUBLISH_TOKEN=TOKEN)
    answer = call(serve(app).port, "/stream/publish", method="HEAD", headers=AUTH)
    assert (answer.status, answer.headers["allow"]) == (405, "POST, OPTIONS")


def test_the_apps_own_405_elsewhere_is_left_alone(make_app, serve) -> None:
    app, _ = make_app(SSE_PUBLISH_TOKEN=TOKEN)

    @app.get("/mine")
    def mine() -> str:
        return "mine"

    answer = call(serve(app).port, "/mine", method="FOO")
    assert answer.status == 405
    assert answer.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/stream/publish", "/stream/stats"])
def test_without_a_token_the_app_answers_as_for_any_unknown_path(make_app, serve, path) -> None:
    app, _ = make_app()

    @app.errorhandler(404)
    def not_found(error: Exception) -> tuple[str, int]:
        return "the app's own 404", 404

    answer = call(serve(app).port, path, body={"data": "x"}, headers=AUTH)
    assert (answer.status, answer.raw) == (404, b"the app's own 404")
