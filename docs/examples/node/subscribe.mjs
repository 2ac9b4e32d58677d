// A minimal emotrack client in Node (zeromq 6): ask the snapshot endpoint for the recent
// history, then follow the live messages, skipping those the snapshot already gave.
// Prints one JSON line per message: {"via": "snapshot"|"live", "topic": ..., "body": {...}}.
//
//   npm install && node subscribe.mjs [PUB_ENDPOINT] [SNAPSHOT_ENDPOINT] [--until-end]
//
// PUB_ENDPOINT defaults to tcp://127.0.0.1:5556; SNAPSHOT_ENDPOINT to its port + 1.
// --until-end exits after the first stream's "end" status.
import * as zmq from "zeromq";

const args = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const untilEnd = process.argv.includes("--until-end");
const pub = args[0] ?? "tcp://127.0.0.1:5556";
const snap = args[1] ?? pub.replace(/:(\d+)$/, (_, p) => `:${Number(p) + 1}`);

const lastSeq = new Map(); // "stream topic" -> highest seq seen
function emit(via, topic, body) {
  const key = `${body.stream} ${topic}`;
  if (lastSeq.has(key) && body.seq <= lastSeq.get(key)) return false; // already had it
  lastSeq.set(key, body.seq);
  console.log(JSON.stringify({ via, topic, body }));
  return untilEnd && topic === "status" && body.event === "end";
}

// 1. Subscribe first, so nothing published while the snapshot travels is missed.
const sub = new zmq.Subscriber();
sub.connect(pub);
sub.subscribe(); // every topic; or sub.subscribe("emotion.") for the curves only

// 2. Snapshot request: one frame "SNAPSHOT" on a REQ socket.  Reply frames:
//    ["SNAPSHOT", meta JSON {stream, count, history_s}, topic, body, topic, body, ...]
const req = new zmq.Request({ receiveTimeout: 2000, linger: 0 });
req.connect(snap);
let done = false;
try {
  await req.send("SNAPSHOT");
  const [tag, meta, ...rest] = await req.receive();
  if (tag.toString() === "SNAPSHOT") {
    console.error(`snapshot: ${meta.toString()}`);
    for (let i = 0; i + 1 < rest.length; i += 2) {
      done = emit("snapshot", rest[i].toString(), JSON.parse(rest[i + 1].toString())) || done;
    }
  }
} catch (err) {
  console.error(`no snapshot from ${snap} (${err.code ?? err.message}); live messages only`);
}
req.close();

// 3. Live messages: multipart [topic, JSON body], UTF-8.
if (!done) {
  for await (const [topic, body] of sub) {
    if (emit("live", topic.toString(), JSON.parse(body.toString()))) break;
  }
}
sub.close();
