/*
 * wsserver-rpc.js: JSON-RPC 2.0 between a page and the desktop program
 * that serves it with wsserver (wsserver.rpc.JsonRpc on the server side).
 * A plain script, no build step and no dependency; types are in
 * /wsserver-rpc.d.ts beside it.
 *
 *   <script src="/wsserver-rpc.js"></script>
 *   const rpc = await WsRpc.connect();            // the page's own server
 *   const files = await rpc.call("files.list", "/home");
 *   rpc.expose({ page: { title: () => document.title } });
 *
 * A call returns a promise; it is rejected with a WsRpcError that carries
 * the JSON-RPC error's code, message and data. The connection comes back by
 * itself with a growing delay after it drops (not after a 1000 Normal
 * Closure: the program ended it on purpose); calls made while it is down
 * wait for it (within their timeout), and calls in flight when it dropped
 * are rejected with CONNECTION_CLOSED, since whether they ran is unknown.
 * Messages that are not JSON-RPC go both ways too: rpc.send() and
 * rpc.onmessage.
 *
 * A phone that sleeps, a laptop that closes its lid, a page the browser
 * froze: their socket may still say OPEN while the connection is long
 * dead. So when the page comes back (the "resume", "pageshow",
 * "visibilitychange" and "online" events), the client asks the program
 * "rpc.ping" and, without an answer within pingTimeout, drops that socket
 * and connects again at once; a client waiting to reconnect does so at
 * once too.
 *
 * With {resume: true} (and a server made with resume=ResumePolicy(...)),
 * a drop loses nothing: the session comes back with every message either
 * side missed, each once and in order. Calls in flight then wait for
 * their answer (within their timeout) instead of failing, and
 * rpc.onresumed runs. Should the session be past saving (away too long,
 * or more missed than is kept), rpc.onresumefailed(reason) runs: calls in
 * flight and messages not yet delivered are dropped (calls rejected with
 * CONNECTION_CLOSED) and the page should reload its state. Binary
 * messages arrive as ArrayBuffers in this mode. See wsserver.resume for
 * the wire format.
 */
(function (global) {
  "use strict";

  // The same codes as wsserver.rpc: the specification's, then ours.
  const INVALID_REQUEST = -32600;
  const METHOD_NOT_FOUND = -32601;
  const INTERNAL_ERROR = -32603;
  const CALL_TIMED_OUT = -32000;
  const CONNECTION_CLOSED = -32001;
  // The prefixes of a resumable session's messages: application, control.
  const DATA = ".";
  const CONTROL = "!";
  const DATA_BYTE = 0x2e;
  // Acknowledge what arrived within this many ms, if not ackEvery messages first.
  const ACK_DELAY = 250;
  // The Close code of a connection given up to resume the session on
  // another: the program keeps the session (wsserver.resume.CLOSE_TO_RESUME).
  const CLOSE_TO_RESUME = 4001;

  class WsRpcError extends Error {
    constructor(code, message, data) {
      super(message);
      this.name = "WsRpcError";
      this.code = code;
      this.data = data;
    }
  }

  function pageServerUrl() {
    return (global.location.protocol === "https:" ? "wss://" : "ws://") + global.location.host + "/";
  }

  // The error object of an answer, from what an exposed function threw.
  function errorObject(error) {
    if (error && Number.isInteger(error.code) && typeof error.message === "string") {
      const object = { code: error.code, message: error.message };
      if (error.data !== undefined) object.data = error.data;
      return object;
    }
    return { code: INTERNAL_ERROR, message: String(error && error.message !== undefined ? error.message : error) };
  }

  // An application message of a resumable session, as it goes on the wire.
  function numbered(data) {
    if (typeof data === "string") return DATA + data;
    if (typeof Blob !== "undefined" && data instanceof Blob) return new Blob([new Uint8Array([DATA_BYTE]), data]);
    const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
    const framed = new Uint8Array(bytes.length + 1);
    framed[0] = DATA_BYTE;
    framed.set(bytes, 1);
    return framed;
  }

  class WsRpc {
    /** Connect, and resolve once the connection is open (reject if the first attempt fails). */
    static connect(url, options) {
      const rpc = new WsRpc(url, options);
      return rpc._firstOpen.then(() => rpc);
    }

    constructor(url, options) {
      this.url = url || pageServerUrl();
      this.options = Object.assign(
        { timeout: 30000, pingTimeout: 5000, reconnect: true, minDelay: 250, maxDelay: 10000, protocols: undefined, resume: false, resumeMaxMessages: 4096 },
        options
      );
      /** Called with no argument each time the connection opens. */
      this.onopen = null;
      /** Called with the CloseEvent each time the connection drops. */
      this.onclose = null;
      /** Called with the data of each message that is not JSON-RPC (text or binary). */
      this.onmessage = null;
      /** {resume: true}: called with no argument after a session came back whole. */
      this.onresumed = null;
      /** {resume: true}: called with the reason when a session could not come back. */
      this.onresumefailed = null;
      // A resumable session: its token, the application messages received
      // and sent in it, the sent ones not yet acknowledged (as framed),
      // and whether the current socket carries it yet.
      this._token = null;
      this._receivedCount = 0;
      this._acknowledged = 0;
      this._ackEvery = 1;
      this._ackTimer = null;
      this._sentCount = 0;
      this._unacked = [];
      this._ready = false;
      this._handshakeTimer = null;
      this._heardAt = 0; // when the last message arrived (Date.now())
      this._methods = new Map();
      this._pending = new Map(); // our calls by id: {resolve, reject, timer, socket}
      this._queue = []; // texts waiting for the connection: {text, id}
      this._lastId = 0;
      this._attempt = 0;
      this._closing = false;
      this._everOpened = false;
      this._socket = null;
      this._retry = null;
      this._firstOpen = new Promise((resolve, reject) => {
        this._resolveFirst = resolve;
        this._rejectFirst = reject;
      });
      this._firstOpen.catch(() => {}); // connect() hands the rejection on
      this._checking = false;
      // The events after which the page checks its connection: [target, event, listener].
      const check = () => this._check();
      const doc = global.document;
      this._wakers = [
        [global, "online", check],
        [global, "pageshow", (event) => { if (event.persisted) check(); }], // back from the back-forward cache
        [doc, "visibilitychange", () => { if (doc.visibilityState === "visible") check(); }],
        [doc, "resume", check], // a frozen page thawed
        // A page unloaded for good ends its session (one kept in the
        // back-forward cache may come back, and resume).
        [global, "pagehide", (event) => { if (this.options.resume && !event.persisted) this.close(); }],
      ].filter(([target]) => target && target.addEventListener);
      for (const [target, name, listener] of this._wakers) target.addEventListener(name, listener);
      this._open();
    }

    /** Whether the connection is open now. */
    get connected() {
      return this._socket !== null && this._socket.readyState === WebSocket.OPEN && (this._ready || !this.options.resume);
    }

    /** Call a method of the program with positional params. */
    call(method, ...params) {
      return this._request(method, params);
    }

    /** Call a method of the program with named params (an object). */
    callNamed(method, params) {
      return this._request(method, params);
    }

    /** Send a notification (no answer). Queued while the connection is down. */
    notify(method, ...params) {
      this._send(JSON.stringify(this._message(method, params)), undefined);
    }

    /** Send a message of the page's own (text or binary), not JSON-RPC. Queued while the connection is down. */
    send(data) {
      this._send(data, undefined);
    }

    /** Methods the program may call: functions by name; nested objects give dotted names. */
    expose(methods, prefix) {
      for (const [name, value] of Object.entries(methods)) {
        const full = (prefix || "") + name;
        if (typeof value === "function") this._methods.set(full, value);
        else if (value && typeof value === "object") this.expose(value, full + ".");
      }
      return this;
    }

    /** Close for good: no reconnecting; pending and queued calls are rejected. */
    close() {
      this._closing = true;
      clearTimeout(this._retry);
      clearTimeout(this._ackTimer);
      for (const [target, name, listener] of this._wakers) target.removeEventListener(name, listener);
      const socket = this._socket;
      this._dropped(socket, null);
      if (socket) socket.close(1000);
    }

    _message(method, params) {
      const message = { jsonrpc: "2.0", method: method };
      if (Array.isArray(params) ? params.length : params !== undefined) message.params = params;
      return message;
    }

    // The page is back (or the network): is the connection still alive?
    _check() {
      if (this._closing || !this.options.reconnect) return;
      if (this._socket === null) {
        // Waiting to reconnect: now, not after the backoff.
        clearTimeout(this._retry);
        this._attempt = 0;
        this._open();
        return;
      }
      if (!this.connected || this._checking) return;
      const socket = this._socket;
      const asked = Date.now();
      this._checking = true;
      this._request("rpc.ping", [], this.options.pingTimeout)
        .then(
          () => {},
          () => {
            // Anything that arrived meanwhile shows the connection alive
            // (the answer may wait behind a long replay).
            if (this._socket === socket && this._heardAt < asked) this._abandon(socket, "no answer to rpc.ping");
          }
        )
        .then(() => { this._checking = false; });
    }

    // Give up on a socket that does not answer: closing it would wait for
    // a closing handshake that never comes, so act as if it had closed.
    // (Should the Close frame reach the program, a resumable session is
    // kept: the page resumes it on the next socket.)
    _abandon(socket, reason) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      socket.close(this.options.resume ? CLOSE_TO_RESUME : 4000, reason);
      clearTimeout(this._handshakeTimer);
      this._socket = null;
      this._ready = false;
      const event = { code: 1006, reason: reason, wasClean: false };
      this._dropped(socket, event);
      if (this.onclose) this.onclose(event);
      this._attempt = 0;
      this._open();
    }

    _request(method, params, timeout) {
      const id = ++this._lastId;
      const message = this._message(method, params);
      message.id = id;
      const text = JSON.stringify(message);
      return new Promise((resolve, reject) => {
        if (this._closing) {
          reject(new WsRpcError(CONNECTION_CLOSED, "Connection closed"));
          return;
        }
        const timer = setTimeout(() => {
          this._pending.delete(id);
          this._queue = this._queue.filter((entry) => entry.id !== id);
          reject(new WsRpcError(CALL_TIMED_OUT, "Call timed out", "no answer in " + (timeout || this.options.timeout) / 1000 + " s"));
        }, timeout || this.options.timeout);
        this._pending.set(id, { resolve, reject, timer, socket: null });
        this._send(text, id);
      });
    }

    _send(text, id) {
      if (this.options.resume) this._transmit(text);
      else if (this.connected) this._write(this._socket, text, id);
      else if (!this._closing) this._queue.push({ text, id });
    }

    _write(socket, text, id) {
      const pending = id === undefined ? undefined : this._pending.get(id);
      if (pending) pending.socket = socket; // it now depends on this connection
      socket.send(text);
    }

    // A message of a resumable session: numbered, kept until the program
    // acknowledges it, and sent now if the session is connected (else
    // when it resumes). Past resumeMaxMessages the oldest is let go: the
    // session cannot resume then, and both sides are told when it tries.
    // (Before the first session, messages wait as they would unresumable.)
    _transmit(data) {
      if (this._closing) return;
      const framed = numbered(data);
      this._sentCount++;
      this._unacked.push(framed);
      if (this._token !== null && this._unacked.length > this.options.resumeMaxMessages) this._unacked.shift();
      if (this.connected) this._socket.send(framed);
    }

    // The URL of the next connect: a new session, or the one to resume.
    _sessionUrl() {
      const url = new URL(this.url, global.location ? global.location.href : undefined);
      url.searchParams.set("wsserver-resume", this._token || "new");
      if (this._token) {
        url.searchParams.set("wsserver-received", String(this._receivedCount));
        url.searchParams.set("wsserver-first", String(this._sentCount - this._unacked.length + 1));
      }
      return url.href;
    }

    // What arrived on a resumable session's socket.
    _arrived(data, socket) {
      if (typeof data === "string" && data[0] === CONTROL) {
        let message = null;
        try {
          message = JSON.parse(data.slice(1));
        } catch (error) {
          message = null;
        }
        this._control(message, socket);
        return;
      }
      const isData = typeof data === "string" ? data[0] === DATA : new Uint8Array(data, 0, Math.min(1, data.byteLength))[0] === DATA_BYTE;
      if (!this._ready || !isData) {
        this._refuse(socket, "not a resumable session's message (was the server made with resume=ResumePolicy()?)");
        return;
      }
      this._receivedCount++;
      if (this._receivedCount - this._acknowledged >= this._ackEvery) this._acknowledge();
      else if (this._ackTimer === null) this._ackTimer = setTimeout(() => this._acknowledge(), ACK_DELAY);
      this._received(data.slice(1), this._token); // calls are answered within this session
    }

    _control(message, socket) {
      const kind = message && message.type;
      if (kind === "session") {
        const failed = this._token !== null ? message.resumeFailed || "the session could not resume" : null;
        this._token = message.token;
        this._ackEvery = message.ackEvery;
        this._receivedCount = this._acknowledged = 0;
        if (failed !== null) {
          // What the old session held is not delivered: the page starts over.
          this._unacked = [];
          this._sentCount = 0;
          this._rejectPending(null, "resume failed: " + failed);
        }
        this._joined(socket);
        if (failed !== null && this.onresumefailed) this.onresumefailed(failed);
      } else if (kind === "resumed" && Number.isInteger(message.received)) {
        if (this._sentCount - this._unacked.length > message.received) {
          // Let go since this connect named its first: the next connect
          // names the true one, and the program says the resume failed.
          this._abandon(socket, "no longer holds what the program missed");
          return;
        }
        this._release(message.received);
        this._joined(socket);
        if (this.onresumed) this.onresumed();
      } else if (kind === "ack" && Number.isInteger(message.received)) {
        this._release(message.received);
      } else {
        this._refuse(socket, "unknown control message");
      }
    }

    // The program does not speak the resume protocol: trying again would
    // not help, so this client closes for good (connect() rejects).
    _refuse(socket, reason) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      socket.close(4002, reason.slice(0, 120));
      this._socket = null;
      const event = { code: 4002, reason: reason, wasClean: false };
      this._rejectFirst(new WsRpcError(CONNECTION_CLOSED, reason));
      this.close();
      if (this.onclose) this.onclose(event);
    }

    // The socket carries the session now: send what the program lacks.
    _joined(socket) {
      clearTimeout(this._handshakeTimer);
      this._ready = true;
      for (const framed of this._unacked) socket.send(framed);
      this._opened();
    }

    // The program has our messages up to number `received`.
    _release(received) {
      const first = this._sentCount - this._unacked.length + 1;
      if (received >= first) this._unacked.splice(0, received - first + 1);
    }

    _acknowledge() {
      clearTimeout(this._ackTimer);
      this._ackTimer = null;
      if (this.connected && this._acknowledged !== this._receivedCount) {
        this._acknowledged = this._receivedCount;
        this._socket.send(CONTROL + JSON.stringify({ type: "ack", received: this._receivedCount }));
      }
    }

    _opened() {
      this._attempt = 0;
      this._everOpened = true;
      this._resolveFirst();
      if (this.onopen) this.onopen();
    }

    _open() {
      let socket;
      try {
        socket = new WebSocket(this.options.resume ? this._sessionUrl() : this.url, this.options.protocols);
      } catch (error) {
        this._closing = true;
        this._rejectFirst(error);
        return;
      }
      this._socket = socket;
      this._ready = false;
      if (this.options.resume) {
        // The session begins with the program's first message, not at open.
        socket.binaryType = "arraybuffer";
        this._acknowledged = this._receivedCount; // the connect's query says as much
        socket.onopen = () => {
          this._handshakeTimer = setTimeout(() => {
            if (this._socket !== socket || this._ready) return;
            // Open, but no session: a program without resume (for good), or a dead connection.
            if (this._everOpened) this._abandon(socket, "no session within pingTimeout");
            else this._refuse(socket, "the program did not start a resumable session (was the server made with resume=ResumePolicy()?)");
          }, this.options.pingTimeout);
        };
        socket.onmessage = (event) => {
          this._heardAt = Date.now();
          this._arrived(event.data, socket);
        };
      } else {
        socket.onopen = () => {
          const queue = this._queue;
          this._queue = [];
          for (const entry of queue) this._write(socket, entry.text, entry.id);
          this._opened();
        };
        socket.onmessage = (event) => {
          this._heardAt = Date.now();
          this._received(event.data, socket);
        };
      }
      socket.onclose = (event) => {
        if (this._socket !== socket) return;
        clearTimeout(this._handshakeTimer);
        this._socket = null;
        this._ready = false;
        if (!this._everOpened) this._closing = true; // the first attempt failed: connect() rejects
        this._dropped(socket, event);
        if (this.onclose) this.onclose(event);
        if (!this._closing && this.options.reconnect && event.code !== 1000) {
          // Dropped while the page was checking, after it woke (a browser
          // may close its sockets when it freezes a page): reconnect now.
          const delay = this._checking ? 0 : Math.min(this.options.maxDelay, this.options.minDelay * 2 ** this._attempt);
          this._attempt = this._checking ? 0 : this._attempt + 1;
          this._retry = setTimeout(() => this._open(), delay * (0.5 + Math.random() / 2));
        } else {
          this._closing = true;
          this._dropped(null, event);
        }
      };
    }

    // End the calls that depended on `socket` (all of them once closing
    // for good; in a resumable session, calls depend on the session).
    _dropped(socket, event) {
      const forGood = this._closing;
      this._rejectPending(forGood ? null : socket, event ? event.code : undefined);
      if (forGood) {
        this._queue = [];
        this._unacked = [];
        this._rejectFirst(new WsRpcError(CONNECTION_CLOSED, "Could not connect to " + this.url));
      }
    }

    // Reject the calls sent on `socket` (every call, when null).
    _rejectPending(socket, data) {
      for (const [id, pending] of this._pending) {
        if (socket === null || pending.socket === socket) {
          clearTimeout(pending.timer);
          this._pending.delete(id);
          pending.reject(new WsRpcError(CONNECTION_CLOSED, "Connection closed", data));
        }
      }
    }

    // `channel`: what calls are answered by, the socket (or, in a
    // resumable session, the session's token) that they came by.
    _received(data, channel) {
      let items = null;
      if (typeof data === "string" && data.indexOf('"jsonrpc"') !== -1) {
        try {
          const value = JSON.parse(data);
          items = Array.isArray(value) ? value : [value];
        } catch (error) {
          items = null;
        }
      }
      if (!items || !items.length || !items.every((item) => item && typeof item === "object" && "jsonrpc" in item)) {
        if (this.onmessage) this.onmessage(data);
        return;
      }
      for (const item of items) {
        if (typeof item.method === "string") this._called(item, channel);
        else if ("result" in item || "error" in item) this._answered(item);
        else if ("id" in item) this._answer(channel, item.id, { error: { code: INVALID_REQUEST, message: "Invalid Request" } });
      }
    }

    _answered(item) {
      const pending = this._pending.get(item.id);
      if (!pending) return; // timed out already
      clearTimeout(pending.timer);
      this._pending.delete(item.id);
      if ("error" in item) {
        const error = item.error || {};
        pending.reject(new WsRpcError(error.code, error.message, error.data));
      } else {
        pending.resolve(item.result);
      }
    }

    _called(item, channel) {
      const method = this._methods.get(item.method);
      if (!method) {
        this._answer(channel, item.id, { error: { code: METHOD_NOT_FOUND, message: "Method not found" } });
        return;
      }
      const params = item.params === undefined ? [] : item.params;
      Promise.resolve()
        .then(() => (Array.isArray(params) ? method(...params) : method(params)))
        .then(
          (result) => this._answer(channel, item.id, { result: result === undefined ? null : result }),
          (error) => this._answer(channel, item.id, { error: errorObject(error) })
        );
    }

    // Answer on the connection (or in the session) the call came by: on
    // another it would be a stray answer (the program ended that call when
    // the connection dropped, or the session), and might settle a new call
    // of the same id.
    _answer(channel, id, body) {
      if (id === undefined) return; // a notification has no answer
      if (this.options.resume ? channel !== this._token : channel.readyState !== WebSocket.OPEN) return;
      let text;
      try {
        text = JSON.stringify(Object.assign({ jsonrpc: "2.0", id: id }, body));
      } catch (error) {
        text = JSON.stringify({ jsonrpc: "2.0", id: id, error: { code: INTERNAL_ERROR, message: "Result is not JSON: " + error.message } });
      }
      if (this.options.resume) this._transmit(text); // the session carries it, across drops
      else channel.send(text);
    }
  }

  WsRpc.Error = WsRpcError;
  WsRpc.codes = Object.freeze({
    PARSE_ERROR: -32700,
    INVALID_REQUEST: INVALID_REQUEST,
    METHOD_NOT_FOUND: METHOD_NOT_FOUND,
    INVALID_PARAMS: -32602,
    INTERNAL_ERROR: INTERNAL_ERROR,
    CALL_TIMED_OUT: CALL_TIMED_OUT,
    CONNECTION_CLOSED: CONNECTION_CLOSED,
    TOO_MANY_PENDING: -32002,
  });
  global.WsRpc = WsRpc;
  global.WsRpcError = WsRpcError;
})(typeof globalThis !== "undefined" ? globalThis : window);
