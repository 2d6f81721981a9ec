// A TypeScript page written against wsserver-rpc.d.ts; the test suite
// compiles it with tsc --strict (tests/test_rpc_types.py).
/// <reference path="../../wsserver/static/wsserver-rpc.d.ts" />

async function main(): Promise<void> {
  const rpc: WsRpc = await WsRpc.connect(undefined, { timeout: 5000, minDelay: 100, protocols: ["chat"] });
  const files = await rpc.call<string[]>("files.list", "/home");
  const first: string | undefined = files[0];
  const difference: number = await rpc.callNamed<number>("subtract", { minuend: 1, subtrahend: 2 });
  rpc.notify("log", first, difference);
  rpc.send(JSON.stringify({ text: "a chat line" }));
  rpc.expose({ page: { title: () => document.title, add: (a: number, b: number) => a + b } }).expose({ ping: () => "pong" });
  rpc.onopen = () => console.log(rpc.connected, rpc.url, rpc.options.timeout);
  rpc.onclose = (event: CloseEvent) => console.log(event.code);
  rpc.onmessage = (data) => console.log(typeof data === "string" ? data.length : data);
  try {
    await rpc.call("slow");
  } catch (error) {
    if (error instanceof WsRpcError && error.code === WsRpc.codes.CALL_TIMED_OUT) console.log(error.message, error.data);
  }
  rpc.close();
  const session: WsRpc = await WsRpc.connect(undefined, { resume: true, resumeMaxMessages: 100 });
  session.onresumed = () => console.log("nothing lost");
  session.onresumefailed = (reason: string) => console.log("reload the state:", reason.length);
  session.close();
}

async function mistakes(rpc: WsRpc): Promise<void> {
  // @ts-expect-error: a method is named by a string
  await rpc.call(42);
  // @ts-expect-error: the result has the type asked for
  const wrong: number = await rpc.call<string>("name");
  // @ts-expect-error: exposed methods are functions or nested tables of them
  rpc.expose({ page: "not a function" });
  // @ts-expect-error: resume is on or off
  await WsRpc.connect(undefined, { resume: "yes" });
  // @ts-expect-error: a failed resume says why
  rpc.onresumefailed = (reason: number) => reason;
  // @ts-expect-error: codes are read-only
  WsRpc.codes.CALL_TIMED_OUT = 1;
  console.log(wrong);
}

main().then(() => mistakes);
