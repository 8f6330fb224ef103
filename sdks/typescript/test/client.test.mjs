// The Client against a real meterline server: batching, retries with the same ids, and
// every failure reported (never dropped). The Python side then checks what was stored.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, DeliveryError, QueueFullError } from "../dist/esm/index.js";
import { deadUrl, quick, server } from "./support.mjs";

const usage = (number) => ({ model: "gpt-4o", input_tokens: 1000 + number, output_tokens: 7 });

test("events are sent in batches of the configured size and each is accepted once", async () => {
  const sizes = [];
  const counting = async (url, init) => {
    sizes.push(JSON.parse(init.body).length);
    return fetch(url, init);
  };
  const client = new Client(server.url, server.ingestKey, { ...quick, batchEventsMax: 10, fetch: counting });
  for (let number = 0; number < 25; number += 1) {
    const id = client.track("ts-acme", "llm.completion", usage(number), {
      id: `${server.run}-plain-${number}`,
      timestamp: server.eventTime,
    });
    assert.equal(id, `${server.run}-plain-${number}`);
  }
  const report = await client.close();
  assert.equal(report.accepted, 25);
  assert.deepEqual(report.failures, []);
  assert.equal(sizes.reduce((sum, size) => sum + size, 0), 25);
  assert.ok(sizes.every((size) => size <= 10), `batches of ${sizes}`);
});

test("a batch whose answer was lost is resent with the same ids and stored once", async () => {
  const bodies = [];
  const losingFirstAnswer = async (url, init) => {
    bodies.push(init.body);
    const response = await fetch(url, init);
    if (bodies.length === 1) {
      await response.text(); // the server stored the batch; its answer never arrives
      throw new TypeError("fetch failed: connection reset");
    }
    return response;
  };
  const client = new Client(server.url, server.ingestKey, { ...quick, fetch: losingFirstAnswer });
  for (let number = 0; number < 5; number += 1) {
    client.track("ts-acme", "llm.completion", usage(number), {
      id: `${server.run}-retried-${number}`,
      timestamp: server.eventTime,
    });
  }
  const report = await client.close();
  assert.equal(bodies.length, 2);
  assert.equal(bodies[1], bodies[0], "the retry resends the very same events");
  assert.equal(report.retries, 1);
  assert.equal(report.duplicate, 5, "the server had them already: idempotent by id");
  assert.equal(report.accepted, 0);
});

test("an invalid event is reported by the callback and by flush, with the field", async () => {
  const reported = [];
  const client = new Client(server.url, server.ingestKey, { ...quick, onFailure: (failures) => reported.push(...failures) });
  client.track("ts-acme", "llm.completion", usage(1), { id: `${server.run}-good`, timestamp: server.eventTime });
  client.track("ts-acme", "llm.completion", usage(2), { id: `${server.run}-bad`, timestamp: "yesterday" });
  const error = await client.flush().then(() => null, (thrown) => thrown);
  assert.ok(error instanceof DeliveryError, String(error));
  assert.equal(error.code, "delivery_failed");
  assert.equal(error.failures.length, 1);
  const [failure] = error.failures;
  assert.equal(failure.kind, "rejected");
  assert.equal(failure.event.id, `${server.run}-bad`);
  assert.equal(failure.errors[0].field, "timestamp");
  assert.deepEqual(reported, error.failures);
  assert.equal(client.report.accepted, 1);
  // each failure is thrown once: the next flush has nothing new to report
  assert.equal((await client.close()).rejected, 1);
});

test("a reused id with other content is a conflict, reported", async () => {
  const client = new Client(server.url, server.ingestKey, quick);
  const id = `${server.run}-conflict`;
  client.track("ts-acme", "llm.completion", usage(1), { id, timestamp: server.eventTime });
  await client.flush();
  client.track("ts-acme", "llm.completion", usage(2), { id, timestamp: server.eventTime });
  await assert.rejects(client.close(), (error) => error instanceof DeliveryError && error.failures[0].kind === "conflict");
  assert.equal(client.report.conflict, 1);
});

test("a refused key rejects the whole batch, with the status", async () => {
  const client = new Client(server.url, "mk_not_a_key", quick);
  client.track("ts-acme", "llm.completion", usage(1), { id: `${server.run}-refused`, timestamp: server.eventTime });
  const error = await client.close().then(() => null, (thrown) => thrown);
  assert.ok(error instanceof DeliveryError);
  assert.equal(error.failures[0].httpStatus, 401);
  assert.equal(error.failures[0].kind, "rejected");
});

test("a server that never answers: undelivered after attemptsMax, listed by flush", async () => {
  const client = new Client(await deadUrl(), server.ingestKey, { ...quick, attemptsMax: 3 });
  client.track("ts-acme", "llm.completion", usage(1), { id: `${server.run}-lost-1` });
  client.track("ts-acme", "llm.completion", usage(2), { id: `${server.run}-lost-2` });
  const error = await client.flush().then(() => null, (thrown) => thrown);
  assert.ok(error instanceof DeliveryError);
  assert.deepEqual(error.failures.map((failure) => [failure.kind, failure.event.id]), [
    ["undelivered", `${server.run}-lost-1`],
    ["undelivered", `${server.run}-lost-2`],
  ]);
  assert.equal(client.report.retries, 2);
  await client.close();
});

test("close gives up after its timeout and reports what it could not send", async () => {
  const client = new Client(await deadUrl(), server.ingestKey, { ...quick, batchEventsMax: 2, queueEventsMax: 2 });
  client.track("ts-acme", "llm.completion", usage(1));
  client.track("ts-acme", "llm.completion", usage(2));
  assert.throws(() => client.track("ts-acme", "llm.completion", usage(3)), QueueFullError);
  const error = await client.close({ timeoutMs: 100 }).then(() => null, (thrown) => thrown);
  assert.ok(error instanceof DeliveryError);
  assert.equal(error.failures.length, 2);
  assert.ok(error.failures.every((failure) => failure.kind === "undelivered"));
  assert.equal(client.report.undelivered, 2);
  assert.throws(() => client.track("ts-acme", "llm.completion", usage(4)), /closed/);
});

test("options out of range are refused naming the option", () => {
  assert.throws(() => new Client(server.url, server.ingestKey, { batchEventsMax: 0 }), /batchEventsMax/);
  assert.throws(
    () => new Client(server.url, server.ingestKey, { batchEventsMax: 10, queueEventsMax: 5 }),
    /queueEventsMax/,
  );
});
