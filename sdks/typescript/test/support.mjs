// What the Node tests share: the server they run against, named by the environment that
// tests/integration/test_typescript_sdk.py sets, and small helpers.
import assert from "node:assert/strict";
import { createServer } from "node:net";

function required(name) {
  const value = process.env[name];
  assert.ok(value, `${name} is not set: run these tests through tests/integration/test_typescript_sdk.py`);
  return value;
}

export const server = {
  url: required("METERLINE_URL"),
  ingestKey: required("METERLINE_INGEST_KEY"),
  adminKey: required("METERLINE_ADMIN_KEY"),
  run: required("METERLINE_RUN"),
  eventTime: required("METERLINE_EVENT_TIME"),
  blocked: required("METERLINE_BLOCKED_CUSTOMER"),
  webhookFile: required("METERLINE_WEBHOOK_FILE"),
};

/** A loopback URL where nothing listens. */
export async function deadUrl() {
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return `http://127.0.0.1:${port}`;
}

/** Poll `condition` until it holds (synchronization, never an assertion of time). */
export async function waitUntil(what, condition, timeoutMs = 10_000) {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    assert.ok(performance.now() < deadline, `${what}: not reached in time`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Client options that keep the tests quick. */
export const quick = { flushIntervalMs: 20, backoffInitialMs: 5, backoffMaxMs: 50, exitFlushTimeoutMs: 0 };
