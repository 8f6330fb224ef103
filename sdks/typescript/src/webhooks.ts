/**
 * Receiving meterline webhooks: check the signature, then trust the body.
 *
 * The header `Meterline-Signature: t=<unix seconds>,v1=<hex>` carries HMAC-SHA256, keyed
 * by the endpoint's secret (`whsec_...`), of `"<t>." + raw body`; several `v1` entries may
 * appear (secret rotation) and any one matching is enough. `verifySignature` compares in
 * constant time, refuses a timestamp outside the tolerance (replays), and returns the
 * parsed envelope. The same scheme as the Python SDK's `verify_signature`. Amounts keep
 * every digit: a non-integer number, or an integer past 2^53, arrives as its decimal
 * string (where the Python SDK gives a `Decimal`), never as a float.
 */

import { createHmac, timingSafeEqual } from "node:crypto";

import { WebhookSignatureError } from "./errors.js";

export const SIGNATURE_HEADER = "Meterline-Signature";
export const EVENT_ID_HEADER = "Meterline-Event-Id";
export const DEFAULT_TOLERANCE_S = 300;
/** Longer headers are refused before any parsing. */
export const HEADER_LENGTH_MAX = 4096;

/** A webhook as meterline sends it. Non-integer numbers in `data` are decimal strings. */
export interface WebhookEnvelope {
  id: string;
  kind: string;
  created?: string;
  data: Record<string, unknown>;
  [field: string]: unknown;
}

export interface VerifyOptions {
  /** How far the header's time may be from now, in seconds (default 300). */
  toleranceS?: number;
  /** "Now" in unix seconds (default: the system clock). */
  nowS?: number;
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/** JSON text with each number that a JS number cannot hold exactly (non-integers,
 * integers past 2^53) turned into a string of its digits; strings are left untouched. */
function quoteInexactNumbers(text: string): string {
  let out = "";
  let index = 0;
  while (index < text.length) {
    const character = text[index] as string;
    if (character === '"') {
      let end = index + 1;
      while (end < text.length && text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      out += text.slice(index, end + 1);
      index = end + 1;
    } else if (character === "-" || (character >= "0" && character <= "9")) {
      NUMBER.lastIndex = index;
      const token = NUMBER.exec(text)?.[0] ?? character;
      const exact = /^-?[0-9]+$/.test(token) && Number.isSafeInteger(Number(token));
      out += exact ? token : `"${token}"`;
      index += token.length;
    } else {
      out += character;
      index += 1;
    }
  }
  return out;
}

function parse(header: string | null | undefined): [number, string[]] {
  if (!header || !header.trim()) throw new WebhookSignatureError(`missing ${SIGNATURE_HEADER} header`);
  if (header.length > HEADER_LENGTH_MAX) {
    throw new WebhookSignatureError(`${SIGNATURE_HEADER} header longer than ${HEADER_LENGTH_MAX}`);
  }
  const timestamps: string[] = [];
  const signatures: string[] = [];
  for (const item of header.split(",")) {
    const trimmed = item.trim();
    const equals = trimmed.indexOf("=");
    if (equals <= 0) {
      throw new WebhookSignatureError(
        `garbled ${SIGNATURE_HEADER} header: ${JSON.stringify(trimmed.slice(0, 40))} is not name=value`,
      );
    }
    const name = trimmed.slice(0, equals);
    const value = trimmed.slice(equals + 1);
    if (name === "t") timestamps.push(value);
    else if (name === "v1") signatures.push(value);
  }
  const [timestamp] = timestamps;
  if (timestamps.length !== 1 || timestamp === undefined) {
    throw new WebhookSignatureError(`garbled ${SIGNATURE_HEADER} header: needs exactly one t=<unix seconds>`);
  }
  if (!/^[0-9]+$/.test(timestamp)) {
    throw new WebhookSignatureError(
      `garbled ${SIGNATURE_HEADER} header: t=${JSON.stringify(timestamp.slice(0, 20))} is not unix seconds`,
    );
  }
  if (signatures.length === 0) throw new WebhookSignatureError(`garbled ${SIGNATURE_HEADER} header: no v1=<signature>`);
  return [Number(timestamp), signatures];
}

/**
 * The webhook envelope `{id, kind, created, data}` if `header` signs `body` with `secret`
 * within the tolerance of now; otherwise throws `WebhookSignatureError`. Pass the raw body
 * (the exact bytes or text received), before any parsing.
 */
export function verifySignature(
  secret: string,
  header: string | null | undefined,
  body: string | Uint8Array,
  options: VerifyOptions = {},
): WebhookEnvelope {
  if (!secret) throw new WebhookSignatureError("no secret given: pass the endpoint's whsec_... secret");
  const [timestampS, signatures] = parse(header);
  const raw = typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body);
  const expected = Buffer.from(
    createHmac("sha256", secret).update(`${timestampS}.`).update(raw).digest("hex"),
    "ascii",
  );
  // Check every entry, so the time taken does not depend on which one matched.
  let matched = false;
  for (const signature of signatures) {
    const given = Buffer.from(signature.trim().toLowerCase(), "ascii");
    const comparable = given.length === expected.length ? given : Buffer.alloc(expected.length);
    const equal = timingSafeEqual(expected, comparable) && given.length === expected.length;
    matched = equal || matched;
  }
  if (!matched) {
    throw new WebhookSignatureError(
      "signature mismatch: the body was changed, or the secret is not this endpoint's",
    );
  }
  const toleranceS = options.toleranceS ?? DEFAULT_TOLERANCE_S;
  const nowS = options.nowS ?? Math.floor(Date.now() / 1000);
  if (Math.abs(nowS - timestampS) > toleranceS) {
    throw new WebhookSignatureError(
      `timestamp ${timestampS} is ${nowS - timestampS} s from now; the tolerance is ${toleranceS} s` +
        " (a replay, or a clock out of sync)",
    );
  }
  let envelope: unknown;
  try {
    envelope = JSON.parse(quoteInexactNumbers(raw.toString("utf8")));
  } catch (error) {
    throw new WebhookSignatureError(`signed body is not JSON: ${String(error)}`);
  }
  if (
    typeof envelope !== "object" ||
    envelope === null ||
    Array.isArray(envelope) ||
    !["id", "kind", "data"].every((field) => field in envelope)
  ) {
    throw new WebhookSignatureError("signed body is not a webhook envelope {id, kind, data}");
  }
  return envelope as WebhookEnvelope;
}
