/**
 * `Gate`: answer "may this customer use this feature now?" locally.
 *
 * The gate keeps a local copy of the server's access decisions, fed by the server's push
 * stream (`GET /v1/access/stream`, Server-Sent Events: a `snapshot` first, then `change`
 * and `heartbeat` events; the protocol of docs/gate.md). `allowed()` is a map lookup and
 * at most one set lookup, with no I/O. While the stream is not live every answer is the
 * configured fail mode.
 *
 * The stream counts as lost on a network error, a non-200 answer, an answer that is not
 * `text/event-stream`, end of stream, a malformed event, an event before the snapshot, and
 * no bytes at all for `heartbeatTimeoutMs`. The gate then reconnects with capped
 * exponential backoff and jitter; the next snapshot replaces the local copy entirely.
 */

import { ClosedError } from "./errors.js";
import { jittered, pause } from "./timing.js";

export type GateStatus = "connecting" | "live" | "lost" | "closed";
export type DecisionSource = "stream" | "fail-open" | "fail-closed";

/** One answer of the gate, with why it was given and where it came from. */
export interface Decision {
  readonly allowed: boolean;
  readonly reason: string;
  readonly source: DecisionSource;
  readonly policy: string | null;
  /** unit -> decimal string, exactly as the server sent it (never a float). */
  readonly remaining: Readonly<Record<string, string>>;
}

export interface GateOptions {
  /** "closed" (default) denies everything while the stream is not live; "open" allows. */
  failMode?: "open" | "closed";
  /** No bytes for this long and the stream counts as lost (default 15000). */
  heartbeatTimeoutMs?: number;
  reconnectDelayMs?: number;
  reconnectDelayMaxMs?: number;
  fetch?: typeof fetch;
}

export const STREAM_PATH = "/v1/access/stream";
const ERROR_BODY_CHARACTERS_MAX = 512;

interface WireDecision {
  blocked: boolean;
  features: string[];
  reason: string;
  policy: string | null;
  remaining: Record<string, string>;
}

const ALL = Symbol("every feature");
type Denied = typeof ALL | ReadonlySet<string>;

interface Entry {
  readonly wire: string;
  readonly denied: Denied | null;
  readonly whenDenied: Decision;
  readonly whenAllowed: Decision;
}

const NO_RESTRICTION: Decision = Object.freeze({
  allowed: true,
  reason: "no restriction",
  source: "stream",
  policy: null,
  remaining: Object.freeze({}),
});

class StreamBroken extends Error {}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function wireDecision(value: unknown, where: string): WireDecision {
  if (!isRecord(value) || typeof value.blocked !== "boolean") {
    throw new StreamBroken(`${where}: a decision needs a boolean "blocked"`);
  }
  const features = value.features ?? [];
  const remaining = value.remaining ?? {};
  if (!Array.isArray(features) || !features.every((feature) => typeof feature === "string")) {
    throw new StreamBroken(`${where}.features: must be a list of strings`);
  }
  if (!isRecord(remaining) || !Object.values(remaining).every((amount) => typeof amount === "string")) {
    throw new StreamBroken(`${where}.remaining: must map units to decimal strings`);
  }
  const policy = value.policy ?? null;
  if (policy !== null && typeof policy !== "string") throw new StreamBroken(`${where}.policy: must be a string`);
  const reason = typeof value.reason === "string" ? value.reason : "";
  return {
    blocked: value.blocked,
    features: features as string[],
    reason,
    policy,
    remaining: remaining as Record<string, string>,
  };
}

function entryOf(wire: WireDecision): Entry {
  const remaining = Object.freeze({ ...wire.remaining });
  let denied: Denied | null;
  let allowedReason: string;
  if (!wire.blocked) {
    denied = null;
    allowedReason = wire.reason || "not blocked";
  } else if (wire.features.length === 0) {
    denied = ALL;
    allowedReason = ""; // never used: every check is denied
  } else {
    denied = new Set(wire.features);
    const list = [...denied].sort().join(", ");
    allowedReason = `only ${list} blocked` + (wire.reason ? `: ${wire.reason}` : "");
  }
  const common = { source: "stream" as const, policy: wire.policy, remaining };
  return {
    wire: JSON.stringify([wire.blocked, [...wire.features].sort(), wire.reason, wire.policy, remaining]),
    denied,
    whenDenied: Object.freeze({ ...common, allowed: false, reason: wire.reason || "blocked" }),
    whenAllowed: Object.freeze({ ...common, allowed: true, reason: allowedReason }),
  };
}

function decide(entry: Entry | undefined, feature?: string): Decision {
  if (entry === undefined) return NO_RESTRICTION;
  const denied = entry.denied;
  if (denied === null) return entry.whenAllowed;
  if (denied === ALL || (feature !== undefined && denied.has(feature))) return entry.whenDenied;
  return entry.whenAllowed;
}

/** Server-Sent Events framing over a byte stream: (event type, data) per block. */
async function* serverSentEvents(
  body: ReadableStream<Uint8Array>,
  onBytes: () => void,
): AsyncGenerator<[string, string]> {
  const decoder = new TextDecoder();
  let buffered = "";
  let eventType = "";
  let data: string[] = [];
  const reader = body.getReader();
  for (;;) {
    const { done, value: chunk } = await reader.read();
    if (done) return;
    onBytes();
    buffered += decoder.decode(chunk, { stream: true });
    const lines = buffered.split(/\r\n|\r|\n/);
    buffered = lines.pop() ?? "";
    for (const line of lines) {
      if (line === "") {
        if (data.length > 0) yield [eventType || "message", data.join("\n")];
        eventType = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "event") eventType = value;
      else if (name === "data") data.push(value);
      // "id" and "retry" are not used by this protocol; unknown fields are ignored (SSE).
    }
  }
}

/** A local copy of the server's access decisions, kept fresh by its push stream. */
export class Gate {
  private readonly url: string;
  private readonly token: string;
  private readonly failOpen: boolean;
  private readonly heartbeatTimeoutMs: number;
  private readonly reconnectDelayMs: number;
  private readonly reconnectDelayMaxMs: number;
  private readonly send: typeof fetch;
  private entries = new Map<string, Entry>();
  private blocked: Map<string, Denied> | null = null;
  private currentStatus: GateStatus = "connecting";
  private currentVersion = 0;
  private lostAt: number | null = null;
  private error: string | null = null;
  private callbacks: Array<(customer: string, decision: Decision) => void> = [];
  private readonly stopping = new AbortController();
  private running: Promise<void> | null = null;
  private firstSnapshot: Array<() => void> = [];

  constructor(baseUrl: string, token: string, options: GateOptions = {}) {
    this.url = `${baseUrl.replace(/\/+$/, "")}${STREAM_PATH}`;
    this.token = token;
    this.failOpen = (options.failMode ?? "closed") === "open";
    this.heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? 15_000;
    this.reconnectDelayMs = options.reconnectDelayMs ?? 500;
    this.reconnectDelayMaxMs = options.reconnectDelayMaxMs ?? 10_000;
    this.send = options.fetch ?? fetch;
  }

  /** Start following the stream and wait up to `waitMs` (default 5000; 0: not at all)
   * for the first snapshot. Resolves with the gate either way: check `status`. */
  async start(options: { waitMs?: number } = {}): Promise<this> {
    if (this.stopping.signal.aborted) throw new ClosedError("the gate is closed");
    this.running ??= this.run();
    const waitMs = options.waitMs ?? 5_000;
    if (this.currentStatus !== "live" && waitMs > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.firstSnapshot.push(resolve);
        timer = setTimeout(resolve, waitMs);
      });
      clearTimeout(timer);
    }
    return this;
  }

  /** The hot path: may `customer` (use `feature`) now? */
  allowed(customer: string, feature?: string): boolean {
    const blocked = this.blocked;
    if (blocked === null) return this.failOpen;
    const denied = blocked.get(customer);
    if (denied === undefined) return true;
    return !(denied === ALL || (feature !== undefined && denied.has(feature)));
  }

  /** The same answer as `allowed()`, explained. */
  check(customer: string, feature?: string): Decision {
    if (this.blocked === null) return this.failDecision();
    return decide(this.entries.get(customer), feature);
  }

  /** Call `callback(customer, decision)` for every applied change and, after a snapshot,
   * for every customer whose decision it changed. A callback that throws is ignored. */
  onChange(callback: (customer: string, decision: Decision) => void): void {
    this.callbacks = [...this.callbacks, callback];
  }

  get status(): GateStatus {
    return this.currentStatus;
  }

  /** `performance.now()` when the stream was lost; null while live or never live. */
  get lostSince(): number | null {
    return this.lostAt;
  }

  get version(): number {
    return this.currentVersion;
  }

  get lastError(): string | null {
    return this.error;
  }

  /** Stop following the stream; afterwards every answer is the fail mode. */
  async close(): Promise<void> {
    if (!this.stopping.signal.aborted) this.stopping.abort();
    this.markClosed();
    this.wakeStarters();
    await this.running;
    this.markClosed();
  }

  private markClosed(): void {
    this.blocked = null;
    this.currentStatus = "closed";
  }

  private wakeStarters(): void {
    const waiters = this.firstSnapshot;
    this.firstSnapshot = [];
    for (const wake of waiters) wake();
  }

  private failDecision(): Decision {
    let reason: string;
    if (this.currentStatus === "closed") reason = "access gate closed";
    else if (this.lostAt === null) reason = "access stream not connected yet";
    else reason = `access stream lost ${((performance.now() - this.lostAt) / 1000).toFixed(1)} s ago`;
    return {
      allowed: this.failOpen,
      reason: `${reason}; ${this.failOpen ? "failing open" : "failing closed"}`,
      source: this.failOpen ? "fail-open" : "fail-closed",
      policy: null,
      remaining: {},
    };
  }

  // -- following the stream ---------------------------------------------------------------

  private async run(): Promise<void> {
    let delayMs = this.reconnectDelayMs;
    while (!this.stopping.signal.aborted) {
      let problem: string;
      try {
        await this.follow();
        problem = "access stream ended";
      } catch (error) {
        problem = error instanceof Error ? `${error.name === "Error" ? "" : error.name + ": "}${error.message}` : String(error);
      }
      if (this.stopping.signal.aborted) break;
      if (this.currentStatus === "live") delayMs = this.reconnectDelayMs;
      this.markLost(problem);
      if (!(await pause(jittered(delayMs), this.stopping.signal))) break;
      delayMs = Math.min(delayMs * 2, this.reconnectDelayMaxMs);
    }
  }

  private async follow(): Promise<void> {
    const silence = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(
        () => silence.abort(new StreamBroken(`no bytes for ${this.heartbeatTimeoutMs} ms`)),
        this.heartbeatTimeoutMs,
      );
    };
    arm();
    try {
      const response = await this.send(this.url, {
        headers: { authorization: `Bearer ${this.token}`, accept: "text/event-stream" },
        signal: AbortSignal.any([this.stopping.signal, silence.signal]),
      });
      if (response.status !== 200) {
        const text = (await response.text()).slice(0, ERROR_BODY_CHARACTERS_MAX).trim();
        throw new StreamBroken(`access stream answered ${response.status}` + (text ? `: ${text}` : ""));
      }
      const mediaType = (response.headers.get("content-type") ?? "").split(";")[0]?.trim();
      if (mediaType !== "text/event-stream" || response.body === null) {
        await response.body?.cancel();
        throw new StreamBroken(`access stream answered ${mediaType || "no"} content`);
      }
      for await (const [eventType, data] of serverSentEvents(response.body, arm)) {
        if (this.stopping.signal.aborted) return;
        this.apply(eventType, data);
      }
    } catch (error) {
      if (silence.signal.aborted) throw silence.signal.reason;
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  private apply(eventType: string, data: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch (error) {
      throw new StreamBroken(`malformed ${eventType} event: ${String(error)}`);
    }
    if (!isRecord(parsed) || !Number.isInteger(parsed.version)) {
      throw new StreamBroken(`malformed ${eventType} event: needs an integer "version"`);
    }
    const version = parsed.version as number;
    if (eventType === "snapshot") this.applySnapshot(version, parsed.decisions);
    else if (this.currentStatus !== "live") throw new StreamBroken(`access stream sent "${eventType}" before its snapshot`);
    else if (eventType === "change") this.applyChange(version, parsed.customer, parsed.decision);
    // "heartbeat" (checked above) and unknown event types change nothing.
  }

  private applySnapshot(version: number, decisions: unknown): void {
    if (!isRecord(decisions)) throw new StreamBroken(`malformed snapshot event: "decisions" must be an object`);
    const entries = new Map<string, Entry>();
    const blocked = new Map<string, Denied>();
    for (const [customer, value] of Object.entries(decisions)) {
      const entry = entryOf(wireDecision(value, `decisions.${customer}`));
      entries.set(customer, entry);
      if (entry.denied !== null) blocked.set(customer, entry.denied);
    }
    const previous = this.entries;
    this.entries = entries;
    this.blocked = blocked;
    this.currentVersion = version;
    this.currentStatus = "live";
    this.lostAt = null;
    this.wakeStarters();
    if (this.callbacks.length === 0) return;
    for (const customer of new Set([...previous.keys(), ...entries.keys()])) {
      const before = previous.get(customer);
      const after = entries.get(customer);
      if (before?.wire !== after?.wire) this.notify(customer, decide(after));
    }
  }

  private applyChange(version: number, customer: unknown, decision: unknown): void {
    if (typeof customer !== "string") throw new StreamBroken(`malformed change event: "customer" must be a string`);
    const entry = entryOf(wireDecision(decision, "decision"));
    if (version <= this.currentVersion) return;
    this.entries.set(customer, entry);
    if (this.blocked !== null) {
      if (entry.denied === null) this.blocked.delete(customer);
      else this.blocked.set(customer, entry.denied);
    }
    this.currentVersion = version;
    this.notify(customer, decide(entry));
  }

  private notify(customer: string, decision: Decision): void {
    for (const callback of this.callbacks) {
      try {
        callback(customer, decision);
      } catch (error) {
        // A failing callback must never stop the gate; it is reported, not thrown.
        process.emitWarning(`meterline access gate onChange callback failed for ${customer}: ${String(error)}`);
      }
    }
  }

  private markLost(problem: string): void {
    this.error = problem;
    if (this.currentStatus === "live") {
      this.blocked = null;
      this.lostAt = performance.now();
      this.currentStatus = "lost";
    }
  }
}
