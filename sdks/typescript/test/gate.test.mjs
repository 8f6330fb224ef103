// The Gate against a real meterline server's push stream: a customer the live engine
// blocked is denied locally, an override's change arrives, a refused key fails closed.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Gate } from "../dist/esm/index.js";
import { server, waitUntil } from "./support.mjs";

test("the gate answers from the pushed snapshot and follows a change", async () => {
  const gate = await new Gate(server.url, server.ingestKey, { failMode: "closed" }).start({ waitMs: 10_000 });
  const changes = [];
  gate.onChange((customer, decision) => changes.push([customer, decision]));
  try {
    assert.equal(gate.status, "live", gate.lastError ?? "");
    assert.ok(gate.version > 0);
    assert.equal(gate.allowed(server.blocked), false);
    assert.equal(gate.allowed(server.blocked, "any-feature"), false);
    const denied = gate.check(server.blocked);
    assert.equal(denied.source, "stream");
    assert.equal(denied.policy, "empty");
    assert.equal(typeof denied.remaining.credits, "string", "amounts stay decimal strings");
    assert.equal(gate.allowed("nobody-at-all"), true);
    assert.equal(gate.check("nobody-at-all").reason, "no restriction");

    const response = await fetch(`${server.url}/v1/customers/${server.blocked}/overrides`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.adminKey}`, "content-type": "application/json" },
      body: JSON.stringify({ kind: "unblock", reason: "ticket 7: paid by wire" }),
    });
    assert.equal(response.status, 201, await response.text());
    await waitUntil("the unblock pushed", () => gate.allowed(server.blocked));
    const [customer, decision] = changes.at(-1);
    assert.equal(customer, server.blocked);
    assert.equal(decision.allowed, true);
  } finally {
    await gate.close();
  }
  assert.equal(gate.status, "closed");
  assert.equal(gate.allowed("nobody-at-all"), false, "closed: the fail mode answers");
  assert.match(gate.check("nobody-at-all").reason, /access gate closed; failing closed/);
});

test("a refused key never goes live and answers by the fail mode", async () => {
  const closed = await new Gate(server.url, "mk_not_a_key", { reconnectDelayMs: 20 }).start({ waitMs: 0 });
  const open = await new Gate(server.url, "mk_not_a_key", { failMode: "open", reconnectDelayMs: 20 }).start({ waitMs: 0 });
  try {
    await waitUntil("the refusal seen", () => closed.lastError !== null && open.lastError !== null);
    assert.equal(closed.status, "connecting");
    assert.match(closed.lastError, /answered 401/);
    assert.equal(closed.allowed("ts-acme"), false);
    assert.equal(closed.check("ts-acme").source, "fail-closed");
    assert.equal(open.allowed("ts-acme"), true);
    assert.equal(open.check("ts-acme").source, "fail-open");
  } finally {
    await Promise.all([closed.close(), open.close()]);
  }
});
