"""JSON-RPC both ways: the page lists a folder through this program, which
asks each page that connects for its title. Run it, open the URL it prints:

    python examples/rpc_panel.py [FOLDER]

Any page with a WebSocket here may call every exposed method: two gates stand
first, the default ``origins`` (this server's pages only) and a signed session.
"""

import sys
from pathlib import Path

import wsserver
from wsserver.http import Request, Sessions
from wsserver.rpc import JsonRpc, RpcError

PAGE = """<!doctype html><meta charset="utf-8"><title>Panel</title><script src="/wsserver-rpc.js"></script>
<form method="post" action="/unlock"><button>Unlock</button></form><pre id="files"></pre>
<script>
WsRpc.connect().then(async (rpc) => {
  rpc.expose({ page: { title: () => document.title } });
  document.getElementById("files").textContent = (await rpc.call("files.list", ".")).join("\\n");
}, () => { document.getElementById("files").textContent = "locked"; });</script>"""


def make_server(folder: Path) -> wsserver.Server:
    server = wsserver.Server()  # origins: this server's own pages only
    http = server.http_server
    http.sessions = Sessions()
    http.route("/", handler=lambda request: PAGE)

    @http.route("/unlock", methods=("POST",))
    def unlock(request: Request) -> wsserver.Response:
        request.session["unlocked"] = True
        return wsserver.redirect("/", 303)

    def admit(client: wsserver.Client, request: Request, response: wsserver.UpgradeResponse, *_: object) -> None:
        if not request.session.get("unlocked"):
            response.error_status(403, "unlock the panel first")

    server.on_upgrade_to_websocket = admit
    rpc = JsonRpc(server)

    @rpc.method("files.list")
    def list_files(path: str) -> list[str]:
        target = (folder / path).resolve()
        if not target.is_relative_to(folder) or not target.is_dir():
            raise RpcError(404, "no such folder here", path)
        return sorted(entry.name for entry in target.iterdir())

    server.on_open = lambda client: rpc.call(client, "page.title", on_result=lambda title: print(f"page {client.id} is {title!r}", flush=True))
    return server


if __name__ == "__main__":
    server = make_server(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve())
    server.start("127.0.0.1", 8766)
    print(f"Open {server.http_server.get_url()}", flush=True)
    server.serve_forever()
