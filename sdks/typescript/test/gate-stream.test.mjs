// The Gate against a small Server-Sent Events server of Node's own (node:http) that the
// test steers: a stream that goes silent is lost, a malformed event is lost, and each
// reconnect's snapshot replaces the local copy.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";

import { Gate } from "../dist/esm/index.js";
import { waitUntil } from "./support.mjs";

const decision = (blocked, features = []) => ({ blocked, features, reason: blocked ? "over budget" : "", policy: null, remaining: { credits: "0.000000001" } });

/** Serves each connection the next script: a list of [event, data] to send, then silence. */
async function streamServer(scripts) {
  let connections = 0;
  const server = createServer((request, response) => {
    const script = scripts[Math.min(connections, scripts.length - 1)];
    connections += 1;
    response.writeHead(200, { "content-type": "text/event-stream" });
    for (const [event, data] of script) response.write(`event: ${event}\ndata: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    connections: () => connections,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

test("a silent stream is lost, answers fail closed, and the next snapshot replaces the copy", async () => {
  const server = await streamServer([
    [["snapshot", { version: 3, decisions: { acme: decision(true), initech: decision(true, ["gpt-4o"]) } }]],
    [["snapshot", { version: 1, decisions: { globex: decision(true) } }]],
  ]);
  const gate = await new Gate(server.url, "key", { heartbeatTimeoutMs: 150, reconnectDelayMs: 400 }).start();
  try {
    assert.equal(gate.status, "live");
    assert.equal(gate.allowed("acme"), false);
    assert.equal(gate.allowed("initech"), true);
    assert.equal(gate.allowed("initech", "gpt-4o"), false);
    assert.equal(gate.check("initech").reason, "only gpt-4o blocked: over budget");
    assert.equal(gate.check("acme").remaining.credits, "0.000000001");
    await waitUntil("the reconnect's snapshot", () => gate.status === "live" && gate.version === 1);
    assert.ok(server.connections() >= 2);
    assert.equal(gate.allowed("acme"), true, "the new snapshot replaced the copy entirely");
    assert.equal(gate.version, 1);
    await waitUntil("lost again after silence", () => gate.status === "lost");
    assert.match(gate.lastError, /no bytes for 150 ms/);
    assert.equal(gate.allowed("anyone"), false);
    assert.match(gate.check("anyone").reason, /access stream lost .* s ago; failing closed/);
  } finally {
    await gate.close();
    await server.close();
  }
});

test("a change before the snapshot breaks the stream; so does a malformed event", async () => {
  const early = await streamServer([[["change", { version: 2, customer: "acme", decision: decision(true) }]]]);
  const gate = await new Gate(early.url, "key", { reconnectDelayMs: 5 }).start({ waitMs: 0 });
  try {
    await waitUntil("the early change refused", () => gate.lastError !== null);
    assert.match(gate.lastError, /"change" before its snapshot/);
    assert.equal(gate.status, "connecting");
  } finally {
    await gate.close();
    await early.close();
  }

  const server = await streamServer([
    [["snapshot", "{not json"]],
    [
      ["snapshot", { version: 5, decisions: {} }],
      ["change", { version: 4, customer: "acme", decision: decision(true) }],
      ["change", { version: 6, customer: "hooli", decision: decision(true) }],
      ["heartbeat", { version: 6 }],
    ],
  ]);
  const changes = [];
  const second = new Gate(server.url, "key", { reconnectDelayMs: 5 });
  second.onChange((customer, answer) => changes.push([customer, answer.allowed]));
  await second.start({ waitMs: 0 });
  try {
    await waitUntil("live on the second connection", () => second.status === "live" && second.version === 6);
    assert.match(second.lastError, /malformed snapshot event/, "why it was last lost stays known");
    assert.equal(second.allowed("acme"), true, "a change older than the snapshot is ignored");
    assert.equal(second.allowed("hooli"), false);
    assert.deepEqual(changes, [["hooli", false]]);
  } finally {
    await second.close();
    await server.close();
  }
});
