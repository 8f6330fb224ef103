// Webhook signatures: a webhook the server really sent (captured by the Python side with
// its headers and raw body) verifies; a changed body, another secret, a stale time or a
// garbled header are refused, each saying why.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { SIGNATURE_HEADER, WebhookSignatureError, verifySignature } from "../dist/esm/index.js";
import { server } from "./support.mjs";

const hook = JSON.parse(readFileSync(server.webhookFile, "utf8"));
const body = Buffer.from(hook.body_base64, "base64");
const refused = (pattern) => (error) => error instanceof WebhookSignatureError && pattern.test(error.message);

test("a webhook the server sent verifies, from bytes or text", () => {
  assert.equal(SIGNATURE_HEADER, "Meterline-Signature");
  const envelope = verifySignature(hook.secret, hook.header, body, { nowS: hook.now_s });
  assert.equal(envelope.id, hook.event_id);
  assert.equal(envelope.kind, "customer.blocked");
  assert.equal(envelope.data.customer, server.blocked);
  assert.deepEqual(verifySignature(hook.secret, hook.header, body.toString("utf8"), { nowS: hook.now_s }), envelope);
  // a rotated secret: any one v1 matching is enough
  const rotated = `${hook.header},v1=${"0".repeat(64)}`;
  assert.equal(verifySignature(hook.secret, rotated, body, { nowS: hook.now_s }).id, hook.event_id);
});

test("a changed body, another secret, a stale time or a garbled header are refused", () => {
  const changed = Buffer.concat([body, Buffer.from(" ")]);
  assert.throws(() => verifySignature(hook.secret, hook.header, changed, { nowS: hook.now_s }), refused(/signature mismatch/));
  assert.throws(() => verifySignature("whsec_other", hook.header, body, { nowS: hook.now_s }), refused(/signature mismatch/));
  assert.throws(() => verifySignature(hook.secret, hook.header, body, { nowS: hook.now_s + 301 }), refused(/tolerance is 300 s/));
  assert.throws(() => verifySignature(hook.secret, "", body), refused(/missing Meterline-Signature/));
  assert.throws(() => verifySignature(hook.secret, "t=abc,v1=00", body), refused(/not unix seconds/));
  assert.throws(() => verifySignature(hook.secret, "t=1", body), refused(/no v1/));
  assert.throws(() => verifySignature(hook.secret, "garbage", body), refused(/not name=value/));
  assert.throws(() => verifySignature("", hook.header, body), refused(/no secret/));
  assert.throws(() => verifySignature(hook.secret, "x".repeat(5000), body), refused(/longer than 4096/));
});

test("amounts keep every digit: non-integers and large integers arrive as strings", async () => {
  const { createHmac } = await import("node:crypto");
  const text = '{"id":"w1","kind":"invoice.finalized","data":{"total":12.340000000000000001,' +
    '"lines":[0.1,2],"sequence":123456789012345678901,"note":"a \\" 1.5","count":-3,"rate":1e-7}}';
  const header = `t=1000,v1=${createHmac("sha256", "whsec_x").update(`1000.${text}`).digest("hex")}`;
  const envelope = verifySignature("whsec_x", header, text, { nowS: 1000 });
  assert.deepEqual(envelope.data, {
    total: "12.340000000000000001",
    lines: ["0.1", 2],
    sequence: "123456789012345678901",
    note: 'a " 1.5',
    count: -3,
    rate: "1e-7",
  });
});
