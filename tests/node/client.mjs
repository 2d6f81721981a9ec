// A Node `ws` client run by tests/test_serve_forever.py: it connects to the URL
// given (offering permessage-deflate, as ws does by default), runs the
// exchange below, and prints one JSON line with what it saw.
import WebSocket from "ws";

const url = process.argv[2];
const seen = { texts: [], binaries: [], pong: null, close: null, echoed: null };
const ws = new WebSocket(url, ["chat"], { perMessageDeflate: true });
// Text that compresses well and is not one repeated letter.
const large = "echo:" + Array.from({ length: 20000 }, (_, i) => `{"row":${i},"name":"item ${i}"}`).join(",");

ws.on("open", () => {
  seen.protocol = ws.protocol;
  seen.extensions = ws.extensions;
  ws.send("héllo from node");
  ws.send(Buffer.from([0, 1, 2, 255]));
  // A fragmented text message.
  ws.send("frag", { fin: false });
  ws.send("mented", { fin: true });
  ws.ping(Buffer.from("node ping"));
  ws.send("big:" + "x".repeat(200000));
  ws.send(large);
});
ws.on("pong", (data) => { seen.pong = data.toString(); });
ws.on("message", (data, isBinary) => {
  const text = isBinary ? null : data.toString();
  if (isBinary) seen.binaries.push([...data]);
  else if (text.startsWith("echo:")) seen.echoed = text === large;
  else seen.texts.push(text.slice(0, 40));
  if (seen.texts.length + seen.binaries.length + (seen.echoed === null ? 0 : 1) === 5) ws.close(1000, "node done");
});
ws.on("close", (code, reason) => {
  seen.close = [code, reason.toString()];
  console.log(JSON.stringify(seen));
});
ws.on("error", (err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
