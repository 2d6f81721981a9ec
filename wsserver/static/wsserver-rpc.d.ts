// Type declarations for /wsserver-rpc.js (a plain script that defines the
// globals WsRpc and WsRpcError). Reference it from a TypeScript page with
//   /// <reference path="./wsserver-rpc.d.ts" />

/** A JSON-RPC error: the one the program answered with, or one of the client's own. */
declare class WsRpcError extends Error {
  constructor(code: number, message: string, data?: unknown);
  readonly name: "WsRpcError";
  /** The JSON-RPC code (see WsRpc.codes). */
  readonly code: number;
  /** The error's data, when it has some. */
  readonly data: unknown;
}

interface WsRpcOptions {
  /** Milliseconds a call waits for its answer (default 30000); then CALL_TIMED_OUT. */
  timeout?: number;
  /** Milliseconds the "rpc.ping" sent when the page comes back waits before the socket is given up (default 5000). */
  pingTimeout?: number;
  /** Reconnect after the connection drops (default true), unless the program closed it with 1000. */
  reconnect?: boolean;
  /** First reconnect delay in milliseconds (default 250); it doubles up to maxDelay. */
  minDelay?: number;
  /** Longest reconnect delay in milliseconds (default 10000). */
  maxDelay?: number;
  /** WebSocket subprotocols to ask for. */
  protocols?: string | string[];
  /**
   * A resumable session (default false; the server needs resume=ResumePolicy(...)):
   * a drop loses no message either way, and calls in flight wait for their answer.
   */
  resume?: boolean;
  /** Messages kept for a resume until the program acknowledges them (default 4096); past it the session cannot resume. */
  resumeMaxMessages?: number;
}

/** A function the program may call: positional params, or one object for named ones. */
type WsRpcMethod = (...params: any[]) => unknown;

/** Functions by name; nested objects give dotted names ({page: {title}} is "page.title"). */
interface WsRpcMethods {
  [name: string]: WsRpcMethod | WsRpcMethods;
}

declare class WsRpc {
  /** Connect (to the page's own server when url is omitted) and resolve once open. */
  static connect(url?: string, options?: WsRpcOptions): Promise<WsRpc>;
  constructor(url?: string, options?: WsRpcOptions);

  static readonly Error: typeof WsRpcError;
  static readonly codes: {
    readonly PARSE_ERROR: -32700;
    readonly INVALID_REQUEST: -32600;
    readonly METHOD_NOT_FOUND: -32601;
    readonly INVALID_PARAMS: -32602;
    readonly INTERNAL_ERROR: -32603;
    readonly CALL_TIMED_OUT: -32000;
    readonly CONNECTION_CLOSED: -32001;
    readonly TOO_MANY_PENDING: -32002;
  };

  readonly url: string;
  readonly options: Required<Omit<WsRpcOptions, "protocols">> & Pick<WsRpcOptions, "protocols">;
  /** Whether the connection is open now. */
  readonly connected: boolean;
  /** Called each time the connection opens. */
  onopen: (() => void) | null;
  /** Called each time the connection drops. */
  onclose: ((event: CloseEvent) => void) | null;
  /** Called with each message that is not JSON-RPC (binary ones are ArrayBuffers with {resume: true}). */
  onmessage: ((data: string | Blob | ArrayBuffer) => void) | null;
  /** {resume: true}: called after the session came back with nothing lost. */
  onresumed: (() => void) | null;
  /** {resume: true}: called when the session could not come back; reload the page's state. */
  onresumefailed: ((reason: string) => void) | null;

  /** Call a method of the program with positional params; rejects with a WsRpcError. */
  call<T = unknown>(method: string, ...params: unknown[]): Promise<T>;
  /** Call a method of the program with named params. */
  callNamed<T = unknown>(method: string, params: Record<string, unknown>): Promise<T>;
  /** Send a notification (no answer); queued while the connection is down. */
  notify(method: string, ...params: unknown[]): void;
  /** Send a message of the page's own, not JSON-RPC; queued while the connection is down. */
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void;
  /** Expose functions the program may call (rpc.call / rpc.survey on its side). */
  expose(methods: WsRpcMethods): this;
  /** Close for good: no reconnecting, pending calls are rejected. */
  close(): void;
}
