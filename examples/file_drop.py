"""A file drop for phones on the LAN: a page rendered from a template, a
name kept in a signed session cookie, uploads streamed to a folder.

    python examples/file_drop.py [FOLDER]      # then open the URL it prints

The page is rendered with Jinja2 when it is installed, else with the
standard library's ``string.Template``: wsserver has no template engine of
its own, a route just returns the ``str`` either one renders.
"""

from __future__ import annotations

import html
import string
import sys
from pathlib import Path
from typing import Any

import wsserver
from wsserver.http import Request, Sessions

PAGE = """<!doctype html><meta charset="utf-8"><title>File drop</title>
<p>Hello, $name.</p>
<form method="post" action="/name"><input name="name" placeholder="your name"><button>Save</button></form>
<form method="post" action="/upload" enctype="multipart/form-data"><input type="file" name="file" multiple><button>Send</button></form>
<ul>$files</ul>"""

JINJA_PAGE = """<!doctype html><meta charset="utf-8"><title>File drop</title>
<p>Hello, {{ name }}.</p>
<form method="post" action="/name"><input name="name" placeholder="your name"><button>Save</button></form>
<form method="post" action="/upload" enctype="multipart/form-data"><input type="file" name="file" multiple><button>Send</button></form>
<ul>{% for file in files %}<li>{{ file }}</li>{% endfor %}</ul>"""


def renderer(use_jinja: bool = True) -> Any:
    """``render(name, files) -> str``, with Jinja2 (autoescaping) when asked and installed."""
    if use_jinja:
        try:
            import jinja2
        except ImportError:
            pass
        else:
            template = jinja2.Environment(autoescape=True).from_string(JINJA_PAGE)
            return lambda name, files: template.render(name=name, files=files)
    page = string.Template(PAGE)
    return lambda name, files: page.substitute(name=html.escape(name), files="".join(f"<li>{html.escape(f)}</li>" for f in files))


def make_server(folder: Path, use_jinja: bool = True) -> wsserver.Server:
    server = wsserver.Server()
    http = server.http_server
    http.sessions = Sessions()  # a key made for this run
    render = renderer(use_jinja)

    @http.route("/")
    def page(request: Request) -> str:
        return render(request.session.get("name", "stranger"), sorted(p.name for p in folder.iterdir()))

    @http.route("/name", methods=("POST",))
    def name(request: Request) -> wsserver.Response:
        request.session["name"] = request.form().get("name", "")[:100]
        return wsserver.redirect("/", 303)

    @http.route("/upload", methods=("POST",), stream=True, max_body_size=2 * 1024**3)
    def upload(request: Request) -> wsserver.Response:
        for file in request.files.get_all("file"):
            if file.filename:  # the base name only: never a path from the client
                file.save(folder / file.filename)
        return wsserver.redirect("/", 303)

    return server


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "dropped").resolve()
    folder.mkdir(exist_ok=True)
    server = make_server(folder)
    server.start("0.0.0.0", 8765)
    print(f"Open {server.http_server.get_url(use_lan_ip=True)} on a phone; files go to {folder}", flush=True)
    server.serve_forever()
