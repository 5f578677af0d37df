"""Sphinx configuration: ``tox -e docs`` (sphinx-build -W -b html docs docs/_build/html)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pallets_sphinx_themes import get_version
from sphinx.application import Sphinx
from sphinx.util import logging

from flask_sse_stream.config import DEFAULTS

project = "flask-sse-stream"
copyright = "flask_sse_stream developers"
release, version = get_version("flask-sse-stream")

extensions = ["sphinx.ext.autodoc", "pallets_sphinx_themes"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
default_role = "code"
exclude_patterns = ["_build"]
# Every cross-reference must resolve (a broken one is an error under -W), except
# those to other projects' objects: there is no network for intersphinx.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(flask|werkzeug|collections|typing|hmac|logging|gevent|redis|datetime)(\..*)?"),
    (r"py:class", r"Flask|Any|T"),
    # The internal modules are described in architecture.rst, not documented object by object.
    (r"py:.*", r"flask_sse_stream\.(?!compat\.)[a-z_]+\..*"),
]

html_theme = "flask"
html_theme_options = {"index_sidebar_logo": False}
html_sidebars = {
    "index": ["localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
html_title = f"flask-sse-stream Documentation ({version})"
html_show_sourcelink = False
# The banner script asks Read the Docs for newer versions from the reader's browser.
version_banner = False

_DATA = re.compile(r"^\.\. data:: (SSE_\w+)\n\n(?:    .*\n|\n)*?    Default: ``(.*)``$", re.M)


def check_config_page(app: Sphinx) -> None:
    """Warn (an error under -W) unless config.rst lists exactly ``config.DEFAULTS``."""
    text = Path(app.srcdir, "config.rst").read_text(encoding="utf-8")
    documented = {key: ast.literal_eval(default) for key, default in _DATA.findall(text)}
    log = logging.getLogger(__name__)
    for key in DEFAULTS.keys() - documented.keys():
        log.warning("config.rst: %s (in flask_sse_stream.config.DEFAULTS) has no '.. data::' entry", key)
    for key in documented.keys() - DEFAULTS.keys():
        log.warning("config.rst: %s is documented but is not in flask_sse_stream.config.DEFAULTS", key)
    for key in documented.keys() & DEFAULTS.keys():
        if documented[key] != DEFAULTS[key] or type(documented[key]) is not type(DEFAULTS[key]):
            log.warning("config.rst: %s defaults to %r, not %r", key, DEFAULTS[key], documented[key])


def setup(app: Sphinx) -> None:
    app.connect("builder-inited", check_config_page)
