// The CommonJS build loads through require() and works like the ES module build.
const assert = require("node:assert/strict");
const { test } = require("node:test");

test("require() gives the same public names", async () => {
  const sdk = require("@meterline/sdk");
  const esm = await import("@meterline/sdk");
  for (const name of ["Client", "Gate", "verifySignature", "DeliveryError", "MeterlineError", "SIGNATURE_HEADER"]) {
    assert.ok(sdk[name] !== undefined, `${name} missing from the CommonJS build`);
    assert.equal(typeof sdk[name], typeof esm[name]);
  }
  assert.notEqual(sdk.Client, esm.Client, "two builds, not one re-exported");
  const error = new sdk.QueueFullError("full");
  assert.ok(error instanceof sdk.MeterlineError);
  assert.equal(error.code, "queue_full");
});
