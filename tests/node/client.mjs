// A Node `ws` client run by tests/test_node_client.py: it connects to the URL
// given, runs the exchange below, and prints one JSON line with what it saw.
import WebSocket from "ws";

const url = process.argv[2];
const seen = { texts: [], binaries: [], pong: null, close: null };
const ws = new WebSocket(url, ["chat"]);

ws.on("open", () => {
  seen.protocol = ws.protocol;
  ws.send("héllo from node");
  ws.send(Buffer.from([0, 1, 2, 255]));
  // A fragmented text message.
  ws.send("frag", { fin: false });
  ws.send("mented", { fin: true });
  ws.ping(Buffer.from("node ping"));
  ws.send("big:" + "x".repeat(200000));
});
ws.on("pong", (data) => { seen.pong = data.toString(); });
ws.on("message", (data, isBinary) => {
  if (isBinary) seen.binaries.push([...data]);
  else seen.texts.push(data.toString().slice(0, 40));
  if (seen.texts.length + seen.binaries.length === 4) ws.close(1000, "node done");
});
ws.on("close", (code, reason) => {
  seen.close = [code, reason.toString()];
  console.log(JSON.stringify(seen));
});
ws.on("error", (err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
