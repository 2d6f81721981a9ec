"""wsserver.rpc over real WebSocket connections (the ``websockets`` client
playing the page): the JSON-RPC 2.0 specification's own examples, the
client rule, errors that leak nothing, bounds on hostile input, deferred
results, and calls from the program into pages."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from conftest import Recorder, Worker, pump_until, run_client, ws_url
from rawhttp import fetch
from wsserver import Client, Server
from wsserver.rpc import (
    CALL_TIMED_OUT,
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    TOO_MANY_PENDING,
    Deferred,
    JsonRpc,
    RpcError,
)

TIMEOUT = 10.0


def subtract(minuend: int, subtrahend: int) -> int:
    return minuend - subtrahend


SPEC_METHODS = {
    "subtract": subtract,
    "sum": lambda *numbers: sum(numbers),
    "update": lambda *values: None,
    "notify_hello": lambda *values: None,
    "get_data": lambda: ["hello", 5],
}

# Section 7 of https://www.jsonrpc.org/specification: each request and the
# answer it gets (None: no answer at all).
SPEC_EXAMPLES = [
    ('{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}', {"jsonrpc": "2.0", "result": 19, "id": 1}),
    ('{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}', {"jsonrpc": "2.0", "result": -19, "id": 2}),
    ('{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}', {"jsonrpc": "2.0", "result": 19, "id": 3}),
    ('{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}', {"jsonrpc": "2.0", "result": 19, "id": 4}),
    ('{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}', None),
    ('{"jsonrpc": "2.0", "method": "foobar"}', None),
    ('{"jsonrpc": "2.0", "method": "foobar", "id": "1"}', {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "1"}),
    ('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]', {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}),
    ('{"jsonrpc": "2.0", "method": 1, "params": "bar"}', {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}),
    (
        '[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method"]',
        {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None},
    ),
    ("[]", {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request", "data": "an empty batch"}, "id": None}),
    ("[1]", [{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}]),
    ("[1,2,3]", [{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}] * 3),
    (
        """[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
        ]""",
        [
            {"jsonrpc": "2.0", "result": 7, "id": "1"},
            {"jsonrpc": "2.0", "result": 19, "id": "2"},
            {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None},
            {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "5"},
            {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"},
        ],
    ),
    ('[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]}, {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]', None),
]

# After a message that gets no answer, this one's answer (a result, or
# "Method not found" where get_data is not exposed) is the next thing received.
SENTINEL = '{"jsonrpc": "2.0", "method": "get_data", "id": "sentinel"}'


def exchange(ws: ClientConnection, text: str) -> Any:
    """Send ``text``; the JSON answer to it, or None when it gets none."""
    ws.send(text)
    ws.send(SENTINEL)
    answer = json.loads(ws.recv(timeout=TIMEOUT))
    if isinstance(answer, dict) and answer["id"] == "sentinel":
        return None
    assert json.loads(ws.recv(timeout=TIMEOUT))["id"] == "sentinel"
    return answer


def session(server: Server, *texts: str) -> list[Any]:
    """Open one connection, exchange each text in turn; the answers."""

    def client() -> list[Any]:
        with connect(ws_url(server)) as ws:
            return [exchange(ws, text) for text in texts]

    return run_client(server, client)


@pytest.fixture
def recorder(server: Server) -> Recorder:
    return Recorder(server)


def test_the_specifications_examples(server: Server, recorder: Recorder) -> None:
    JsonRpc(server, SPEC_METHODS, exclusive=True)
    answers = session(server, *(text for text, _ in SPEC_EXAMPLES))
    assert answers == [expected for _, expected in SPEC_EXAMPLES]
    assert recorder.messages == [] and recorder.errors == []


def test_other_messages_pass_through_to_on_message(server: Server, recorder: Recorder) -> None:
    JsonRpc(server, SPEC_METHODS)
    own = ["hello", '{"type": "chat", "text": "hi"}', "[1, 2, 3]", '{"jsonrpc": "2.0", "method": "foobar, "params"', "42"]

    def client() -> Any:
        with connect(ws_url(server)) as ws:
            for text in own:
                ws.send(text)
            ws.send(b"\x00binary")
            return exchange(ws, '{"jsonrpc": "2.0", "method": "subtract", "params": [5, 3], "id": 7}')

    assert run_client(server, client) == {"jsonrpc": "2.0", "result": 2, "id": 7}
    pump_until(server, lambda: len(recorder.messages) == len(own) + 1)
    assert [message.data for _, message in recorder.messages] == [*own, b"\x00binary"]


def test_a_method_may_ask_for_its_caller(server: Server) -> None:
    rpc = JsonRpc(server)
    callers: list[Client] = []

    @rpc.method("whoami")
    def whoami(greeting: str, *, client: Client) -> str:
        callers.append(client)
        return f"{greeting} {client.id}"

    answers = session(
        server,
        '{"jsonrpc": "2.0", "method": "whoami", "params": ["hi"], "id": 1}',
        '{"jsonrpc": "2.0", "method": "whoami", "params": {"greeting": "hi", "client": 3}, "id": 2}',
    )
    assert answers[0] == {"jsonrpc": "2.0", "result": f"hi {callers[0].id}", "id": 1}
    assert answers[1]["error"]["code"] == INVALID_PARAMS and len(callers) == 1


def test_methods_from_objects_nested_dicts_and_decorators(server: Server) -> None:
    class Files:
        def count(self) -> int:
            return 3

        def _hidden(self) -> None:
            raise AssertionError("private methods are not exposed")

    rpc = JsonRpc(server, {"files": Files(), "ui": {"theme": {"get": lambda: "dark"}}})

    @rpc.method
    def ping() -> str:
        return "pong"

    with pytest.raises(ValueError, match="reserved"):
        rpc.methods.add("rpc.discover", ping)
    assert rpc.methods.names() == ["files.count", "ping", "ui.theme.get"]
    answers = session(
        server,
        '{"jsonrpc": "2.0", "method": "files.count", "id": 1}',
        '{"jsonrpc": "2.0", "method": "ui.theme.get", "id": 2}',
        '{"jsonrpc": "2.0", "method": "ping", "id": 3}',
        '{"jsonrpc": "2.0", "method": "files._hidden", "id": 4}',
    )
    assert [answer.get("result", answer.get("error", {}).get("code")) for answer in answers] == [3, "dark", "pong", METHOD_NOT_FOUND]


def test_params_that_do_not_fit_are_invalid_params(server: Server, recorder: Recorder) -> None:
    JsonRpc(server, SPEC_METHODS)
    answers = session(
        server,
        '{"jsonrpc": "2.0", "method": "subtract", "params": [1, 2, 3], "id": 1}',
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 1}, "id": 2}',
        '{"jsonrpc": "2.0", "method": "get_data", "params": ["unexpected"], "id": 3}',
        '{"jsonrpc": "2.0", "method": "subtract", "params": "1, 2", "id": 4}',
        '{"jsonrpc": "2.0", "method": "subtract", "params": null, "id": 5}',
        '{"jsonrpc": "1.0", "method": "subtract", "params": [1, 2], "id": 6}',
        '{"jsonrpc": "2.0", "method": "subtract", "params": [1, 2], "id": true}',
    )
    assert [answer["error"]["code"] for answer in answers] == [INVALID_PARAMS] * 3 + [INVALID_REQUEST] * 4
    assert "subtrahend" in answers[1]["error"]["data"]
    assert [answer["id"] for answer in answers] == [1, 2, 3, 4, 5, 6, None]
    assert recorder.errors == []


def test_errors_the_program_raises_and_ones_that_leak_nothing(server: Server, recorder: Recorder) -> None:
    rpc = JsonRpc(server)

    @rpc.method
    def refuse(path: str) -> None:
        raise RpcError(4004, "No such file", {"path": path})

    @rpc.method
    def crash() -> None:
        raise KeyError("secret-table-name")

    @rpc.method
    def not_json() -> Any:
        return {1, 2}

    @rpc.method
    def not_a_number() -> float:
        return float("nan")

    texts = [
        '{"jsonrpc": "2.0", "method": "refuse", "params": ["/x"], "id": 1}',
        '{"jsonrpc": "2.0", "method": "crash", "id": 2}',
        '{"jsonrpc": "2.0", "method": "not_json", "id": 3}',
        '{"jsonrpc": "2.0", "method": "not_a_number", "id": 4}',
        '{"jsonrpc": "2.0", "method": "crash"}',
    ]
    answers = session(server, *texts)
    assert answers[0] == {"jsonrpc": "2.0", "error": {"code": 4004, "message": "No such file", "data": {"path": "/x"}}, "id": 1}
    internal = {"code": INTERNAL_ERROR, "message": "Internal error"}
    assert [answer and answer["error"] for answer in answers[1:]] == [internal, internal, internal, None]
    assert "secret" not in json.dumps(answers)
    # The details went to on_error, once for each; the notification's too.
    kinds = [type(exc) for _, exc in recorder.errors]
    assert kinds == [KeyError, TypeError, ValueError, KeyError]
    assert all(client is not None for client, _ in recorder.errors)


def test_hostile_input_is_bounded(server: Server, recorder: Recorder) -> None:
    JsonRpc(server, SPEC_METHODS, max_batch=100, max_depth=32)
    call = '{"jsonrpc": "2.0", "method": "get_data", "id": %d}'
    full = "[" + ",".join(call % n for n in range(100)) + "]"
    huge = "[" + ",".join(call % n for n in range(101)) + "]"
    nested = '{"jsonrpc": "2.0", "method": "update", "params": [%s], "id": 1}'
    answers = session(
        server,
        full,
        huge,
        nested % ("[" * 30 + "]" * 30),  # 32 levels with the object and params
        nested % ("[" * 31 + "]" * 31),
        nested % ("[" * 200_000),  # deeper than the decoder's own stack
        '{"jsonrpc": "2.0", "method": "sum", "params": [NaN], "id": 1}',
    )
    assert [answer["id"] for answer in answers[0]] == list(range(100))
    assert answers[1] == {"jsonrpc": "2.0", "error": {"code": INVALID_REQUEST, "message": "Invalid Request", "data": "a batch of 101 entries; the limit is 100"}, "id": None}
    assert answers[2] == {"jsonrpc": "2.0", "result": None, "id": 1}
    too_deep = {"jsonrpc": "2.0", "error": {"code": INVALID_REQUEST, "message": "Invalid Request", "data": "JSON nested deeper than 32 levels"}, "id": None}
    assert answers[3] == answers[4] == too_deep
    # Not JSON (NaN is not): an application message as far as RPC can tell.
    assert answers[5] is None and [message.data for _, message in recorder.messages] == ['{"jsonrpc": "2.0", "method": "sum", "params": [NaN], "id": 1}']


class Page:
    """A page played by the websockets client on a thread: it answers the
    program's calls with ``answer(method, params)`` (None: no answer), and
    keeps what it received."""

    def __init__(self, server: Server, answer: Callable[[str, Any], Any] = lambda method, params: None) -> None:
        self.received: list[Any] = []
        self.outgoing: queue.Queue[str | None] = queue.Queue()
        self.answer = answer
        self.ready = threading.Event()
        self.worker = Worker(self._run, ws_url(server))
        self.worker.start()

    def send(self, text: str) -> None:
        self.outgoing.put(text)

    def leave(self) -> None:
        self.outgoing.put(None)

    def _run(self, url: str) -> None:
        with connect(url) as ws:
            self.ready.set()
            while True:
                try:
                    text = self.outgoing.get_nowait()
                except queue.Empty:
                    pass
                else:
                    if text is None:
                        return
                    ws.send(text)
                try:
                    message = json.loads(ws.recv(timeout=0.01))
                except TimeoutError:
                    continue
                self.received.append(message)
                if "method" in message and "id" in message:
                    reply = self.answer(message["method"], message.get("params"))
                    if reply is not None:
                        ws.send(json.dumps({"jsonrpc": "2.0", "id": message["id"], **reply}))


@pytest.fixture
def pages(server: Server) -> Iterator[Callable[..., Page]]:
    made: list[Page] = []

    def make(answer: Callable[[str, Any], Any] = lambda method, params: None) -> Page:
        page = Page(server, answer)
        made.append(page)
        return page

    yield make
    for page in made:
        page.leave()
        pump_until(server, lambda page=page: not page.worker.is_alive(), what="the page to leave")  # type: ignore[misc]


def open_pages(server: Server, rpc: JsonRpc, count: int, make: Callable[..., Page], answer: Callable[[str, Any], Any]) -> list[Page]:
    made = [make(answer) for _ in range(count)]
    pump_until(server, lambda: len(rpc.clients()) == count, what="the pages to connect")
    return made


def page_answer(method: str, params: Any) -> Any:
    if method == "page.add":
        return {"result": sum(params)}
    if method == "page.fail":
        return {"error": {"code": 7, "message": "no", "data": params}}
    if method == "page.silent":
        return None
    return {"error": {"code": METHOD_NOT_FOUND, "message": "Method not found"}}


def test_calls_into_pages_and_a_survey(server: Server, recorder: Recorder, pages: Callable[..., Page]) -> None:
    rpc = JsonRpc(server)
    open_pages(server, rpc, 3, pages, page_answer)
    client = rpc.clients()[0]
    outcomes: list[Any] = []
    rpc.call(client, "page.add", 2, 3, on_result=outcomes.append, on_error=outcomes.append)
    rpc.call(client, "page.fail", "x", on_result=outcomes.append, on_error=outcomes.append)
    rpc.call(client, "page.nothing", on_result=outcomes.append, on_error=outcomes.append)
    assert outcomes == []  # never before call() returns
    pump_until(server, lambda: len(outcomes) == 3)
    assert outcomes[0] == 5
    assert [(error.code, error.message, error.data) for error in outcomes[1:]] == [(7, "no", ["x"]), (METHOD_NOT_FOUND, "Method not found", None)]
    answers: dict[int, Any] = {}
    called = rpc.survey("page.add", 1, 1, on_result=lambda client, result: answers.__setitem__(client.id, result))
    pump_until(server, lambda: len(answers) == 3)
    assert answers == {client.id: 2 for client in called}
    assert recorder.errors == []


def test_a_page_that_never_answers_times_out_once(server: Server, recorder: Recorder, pages: Callable[..., Page]) -> None:
    rpc = JsonRpc(server)
    (page,) = open_pages(server, rpc, 1, pages, page_answer)
    client = rpc.clients()[0]
    errors: list[RpcError] = []
    results: list[Any] = []
    rpc.call(client, "page.silent", on_result=results.append, on_error=errors.append, timeout=0.2)
    pump_until(server, lambda: errors)
    assert errors[0].code == CALL_TIMED_OUT
    # A late answer finds nobody waiting: no second callback.
    ident = page.received[-1]["id"]
    page.send(json.dumps({"jsonrpc": "2.0", "result": 1, "id": ident}))
    rpc.call(client, "page.add", 1, on_result=results.append, on_error=errors.append)
    pump_until(server, lambda: results)
    assert results == [1] and len(errors) == 1
    assert rpc._peers[client.id].calls == {}
    # With no on_error, the error goes to the server's on_error.
    rpc.call(client, "page.silent", timeout=0.05)
    pump_until(server, lambda: recorder.errors)
    assert isinstance(recorder.errors[0][1], RpcError) and recorder.errors[0][1].code == CALL_TIMED_OUT


def test_a_page_that_leaves_ends_everything_pending_once(server: Server, recorder: Recorder, pages: Callable[..., Page]) -> None:
    rpc = JsonRpc(server)
    waiting: list[Deferred] = []
    cancelled: list[str] = []

    @rpc.method
    def slow() -> Deferred:
        deferred = Deferred()
        deferred.add_cancel_callback(lambda: cancelled.append("slow"))
        waiting.append(deferred)
        return deferred

    (page,) = open_pages(server, rpc, 1, pages, page_answer)
    client = rpc.clients()[0]
    page.send('{"jsonrpc": "2.0", "method": "slow", "id": 1}')
    pump_until(server, lambda: waiting)
    outcomes: list[Any] = []
    for _ in range(2):
        rpc.call(client, "page.silent", on_result=outcomes.append, on_error=outcomes.append)
    page.leave()
    pump_until(server, lambda: recorder.closed[client.id] == 1)
    assert [error.code for error in outcomes] == [CONNECTION_CLOSED, CONNECTION_CLOSED]
    assert waiting[0].cancelled and cancelled == ["slow"]
    assert waiting[0].resolve("too late") is False
    # A call to a client that is gone ends the same way, after call() returns.
    rpc.call(client, "page.add", 1, on_result=outcomes.append, on_error=outcomes.append)
    assert len(outcomes) == 2
    pump_until(server, lambda: len(outcomes) == 3)
    assert outcomes[2].code == CONNECTION_CLOSED
    assert rpc.clients() == [] and rpc._peers == {} and recorder.errors == []


def test_deferred_results_from_a_worker_thread_and_a_future(server: Server) -> None:
    rpc = JsonRpc(server, SPEC_METHODS)
    executor = ThreadPoolExecutor(2)
    release = threading.Event()

    @rpc.method
    def later(value: int) -> Deferred:
        deferred = Deferred()

        def work() -> None:
            release.wait(TIMEOUT)
            deferred.resolve(value * 2)
            deferred.reject(RuntimeError("the second settle does nothing"))

        threading.Thread(target=work, daemon=True).start()
        return deferred

    @rpc.method
    def pooled(value: int) -> Any:
        return executor.submit(lambda: value + 100)

    @rpc.method
    def fails_later() -> Any:
        return executor.submit(lambda: 1 / 0)

    def client() -> Any:
        with connect(ws_url(server)) as ws:
            # A batch waits for its deferred entries and is sent as one array.
            ws.send(
                '[{"jsonrpc": "2.0", "method": "later", "params": [21], "id": 1},'
                ' {"jsonrpc": "2.0", "method": "get_data", "id": 2},'
                ' {"jsonrpc": "2.0", "method": "pooled", "params": [1], "id": 3}]'
            )
            # Meanwhile other calls are answered as their results come.
            ws.send('{"jsonrpc": "2.0", "method": "fails_later", "id": 4}')
            first = json.loads(ws.recv(timeout=TIMEOUT))
            release.set()
            return first, json.loads(ws.recv(timeout=TIMEOUT))

    try:
        first, batch = run_client(server, client)
    finally:
        executor.shutdown()
    assert first == {"jsonrpc": "2.0", "error": {"code": INTERNAL_ERROR, "message": "Internal error"}, "id": 4}
    assert batch == [
        {"jsonrpc": "2.0", "result": 42, "id": 1},
        {"jsonrpc": "2.0", "result": ["hello", 5], "id": 2},
        {"jsonrpc": "2.0", "result": 101, "id": 3},
    ]


def test_deferred_results_are_bounded_per_client(server: Server) -> None:
    rpc = JsonRpc(server, max_pending=3)
    held: list[Deferred] = []
    rpc.methods.add("hold", lambda: held.append(Deferred()) or held[-1])
    answers = session(server, *(f'{{"jsonrpc": "2.0", "method": "hold", "id": {n}}}' for n in range(4)))
    assert answers[:3] == [None, None, None]  # still waiting (the sentinel came back first)
    assert answers[3]["error"]["code"] == TOO_MANY_PENDING and len(held) == 3


def test_notify_and_publish_reach_rpc_clients_only(server: Server, pages: Callable[..., Page]) -> None:
    rpc = JsonRpc(server)
    first, second = open_pages(server, rpc, 2, pages, page_answer)
    quiet = rpc.clients()[1]
    rpc.stop(quiet)
    assert rpc.publish("news", "all") and rpc.notify(rpc.clients()[0], "news", "one")
    assert not rpc.notify(quiet, "news", "stopped")
    notes = [
        {"jsonrpc": "2.0", "method": "news", "params": ["all"]},
        {"jsonrpc": "2.0", "method": "news", "params": ["one"]},
    ]
    pump_until(server, lambda: first.received == notes or second.received == notes)
    assert [] in (first.received, second.received)


def test_rpc_can_be_started_per_connection(server: Server, recorder: Recorder) -> None:
    rpc = JsonRpc(server, SPEC_METHODS, auto_start=False)
    server.on_upgrade_to_websocket = lambda client, request, response, protocols, extensions: (
        rpc.start(client) if request.path == "/rpc" else None
    )
    call = '{"jsonrpc": "2.0", "method": "get_data", "id": 1}'

    def client(path: str) -> Any:
        with connect(ws_url(server, path)) as ws:
            ws.send(call)
            return json.loads(ws.recv(timeout=TIMEOUT)) if path == "/rpc" else None

    assert run_client(server, client, "/rpc") == {"jsonrpc": "2.0", "result": ["hello", 5], "id": 1}
    run_client(server, client, "/plain")
    pump_until(server, lambda: recorder.messages)
    assert recorder.messages[0][1].data == call


def test_a_foreign_page_cannot_call(server: Server) -> None:
    called: list[int] = []
    JsonRpc(server, {"touch": lambda: called.append(1)})

    def client() -> int:
        try:
            connect(ws_url(server), origin="https://evil.example")  # type: ignore[arg-type]
        except InvalidStatus as exc:
            return exc.response.status_code
        raise AssertionError("a foreign origin was let in")

    assert run_client(server, client) == 403 and called == []


def test_the_javascript_client_is_served(server: Server) -> None:
    JsonRpc(server)
    status, headers, body = fetch(server, "/wsserver-rpc.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert b"class WsRpc" in body
    status, _, body = fetch(server, "/wsserver-rpc.d.ts")
    assert status == 200 and b"declare class WsRpc" in body


def test_translate_message_is_taken_once(server: Server) -> None:
    JsonRpc(server)
    with pytest.raises(AttributeError, match="cannot be replaced"):
        JsonRpc(server)
