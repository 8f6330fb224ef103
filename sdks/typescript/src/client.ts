/**
 * `Client`: send usage from a product without slowing it down.
 *
 * `track()` builds the event (id and timestamp fixed at call time, so a retry resends the
 * very same event) and puts it on a bounded queue; it throws `QueueFullError` rather than
 * drop silently. Batches of up to `batchEventsMax` are sent when that many are waiting or
 * `flushIntervalMs` after the first one, one batch at a time, retried with capped
 * exponential backoff and jitter on network errors, 408, 425, 429 and 5xx; the server's
 * idempotency by event id makes a resend safe. Every event ends in exactly one outcome:
 * accepted, duplicate, or a `Failure` (rejected, conflict, undelivered), and every failure
 * is reported three ways: `onFailure`, `report.failures`, and the next `flush()` or
 * `close()`, which reject with a `DeliveryError` listing it.
 */

import { randomUUID } from "node:crypto";

import { ClosedError, InvalidOptionError, MeterlineError, QueueFullError } from "./errors.js";
import { jittered, pause } from "./timing.js";

/** A property value: what JSON carries. Money as a number keeps at most 10 decimals. */
export type PropertyValue =
  | string
  | number
  | boolean
  | null
  | PropertyValue[]
  | { [key: string]: PropertyValue };

/** One native meterline event, exactly as sent. */
export interface UsageEvent {
  readonly id: string;
  readonly customer: string;
  readonly type: string;
  readonly timestamp: string;
  readonly properties: Readonly<Record<string, PropertyValue>>;
}

export interface FieldError {
  readonly field: string;
  readonly reason: string;
}

/** The server's answer for one event of a batch (`POST /v1/events`). */
export interface EventOutcome {
  readonly index: number;
  readonly status: "accepted" | "duplicate" | "conflict" | "rejected";
  readonly id?: string;
  readonly sequence?: number;
  readonly errors?: FieldError[];
}

/** An event that was not stored, and why. */
export interface Failure {
  /** rejected: invalid or refused; conflict: its id is stored with other content;
   * undelivered: never answered (gave up retrying, or closed first). */
  readonly kind: "rejected" | "conflict" | "undelivered";
  readonly event: UsageEvent;
  readonly reason: string;
  /** The HTTP status of the answer, when there was one. */
  readonly httpStatus?: number;
  readonly errors?: readonly FieldError[];
}

/** What the client has delivered so far, counted per outcome. */
export interface DeliveryReport {
  accepted: number;
  duplicate: number;
  conflict: number;
  rejected: number;
  undelivered: number;
  retries: number;
  failures: Failure[];
}

/** `flush()` or `close()`: some events since the previous one were not stored. */
export class DeliveryError extends MeterlineError {
  readonly failures: readonly Failure[];

  constructor(failures: readonly Failure[]) {
    const kinds = new Map<string, number>();
    for (const failure of failures) kinds.set(failure.kind, (kinds.get(failure.kind) ?? 0) + 1);
    const summary = [...kinds].map(([kind, count]) => `${count} ${kind}`).join(", ");
    super("delivery_failed", `${failures.length} events were not stored (${summary})`);
    this.failures = failures;
  }
}

export interface ClientOptions {
  /** Events per request, 1..10000 (default 500). */
  batchEventsMax?: number;
  /** How long the first queued event waits for others before a batch goes (default 500). */
  flushIntervalMs?: number;
  /** Events that may wait in memory (default 100000); past it `track()` throws. */
  queueEventsMax?: number;
  /** The first retry's upper delay (default 100); doubled per retry up to the maximum. */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Attempts per batch before its events count as undelivered (default: no limit). */
  attemptsMax?: number;
  requestTimeoutMs?: number;
  /** Called once per answered batch with the events of it that were not stored. */
  onFailure?: (failures: readonly Failure[]) => void;
  /** The fetch to send with (default: the global one). */
  fetch?: typeof fetch;
  /** Close (flushing up to this long) when Node's event loop empties with events
   * queued; 0 leaves that to the caller (default 30000). */
  exitFlushTimeoutMs?: number;
}

export interface TrackOptions {
  /** The event's id, its idempotency key (default: a random UUID). */
  id?: string;
  timestamp?: Date | string;
}

const RETRYABLE_STATUS = new Set([408, 425, 429, 500, 502, 503, 504]);
const BATCH_EVENTS_LIMIT = 10_000;

function checkRange(name: string, value: number, lowest: number, highest = Infinity): number {
  if (!(value >= lowest && value <= highest)) {
    const upper = highest === Infinity ? "" : ` and at most ${highest}`;
    throw new InvalidOptionError(`${name} must be at least ${lowest}${upper}, not ${value}`);
  }
  return value;
}

function emptyReport(): DeliveryReport {
  return { accepted: 0, duplicate: 0, conflict: 0, rejected: 0, undelivered: 0, retries: 0, failures: [] };
}

/** A batching, retrying client for `POST /v1/events`. */
export class Client {
  readonly report: DeliveryReport = emptyReport();
  private readonly url: string;
  private readonly headers: Record<string, string>;
  private readonly batchEventsMax: number;
  private readonly flushIntervalMs: number;
  private readonly queueEventsMax: number;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private readonly attemptsMax: number;
  private readonly requestTimeoutMs: number;
  private readonly exitFlushTimeoutMs: number;
  private readonly onFailure: ((failures: readonly Failure[]) => void) | undefined;
  private readonly send: typeof fetch;
  private readonly queue: UsageEvent[] = [];
  private inFlight = 0;
  private sending: Promise<void> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private idleWaiters: Array<() => void> = [];
  private unreported: Failure[] = [];
  private closed = false;
  private readonly giveUp = new AbortController();
  private readonly atExit = (): void => this.closeAtExit();

  constructor(baseUrl: string, apiKey: string, options: ClientOptions = {}) {
    this.url = `${baseUrl.replace(/\/+$/, "")}/v1/events`;
    this.headers = { authorization: `Bearer ${apiKey}`, "content-type": "application/json" };
    this.batchEventsMax = checkRange("batchEventsMax", options.batchEventsMax ?? 500, 1, BATCH_EVENTS_LIMIT);
    this.queueEventsMax = checkRange("queueEventsMax", options.queueEventsMax ?? 100_000, this.batchEventsMax);
    this.flushIntervalMs = checkRange("flushIntervalMs", options.flushIntervalMs ?? 500, 0);
    this.backoffInitialMs = checkRange("backoffInitialMs", options.backoffInitialMs ?? 100, 1);
    this.backoffMaxMs = checkRange("backoffMaxMs", options.backoffMaxMs ?? 5_000, this.backoffInitialMs);
    this.attemptsMax = checkRange("attemptsMax", options.attemptsMax ?? Infinity, 1);
    this.requestTimeoutMs = checkRange("requestTimeoutMs", options.requestTimeoutMs ?? 10_000, 1);
    this.exitFlushTimeoutMs = checkRange("exitFlushTimeoutMs", options.exitFlushTimeoutMs ?? 30_000, 0);
    this.onFailure = options.onFailure;
    this.send = options.fetch ?? fetch;
    if (this.exitFlushTimeoutMs > 0) process.on("beforeExit", this.atExit);
  }

  // -- the caller's side ------------------------------------------------------------------

  /** Queue one event; returns its id. Throws `QueueFullError` when the queue is full. */
  track(
    customer: string,
    type: string,
    properties: Record<string, PropertyValue> = {},
    options: TrackOptions = {},
  ): string {
    if (this.closed) throw new ClosedError("the client is closed");
    if (this.inFlight >= this.queueEventsMax) {
      throw new QueueFullError(
        `${this.inFlight} events are waiting to be sent; the server may be down`,
      );
    }
    const moment = options.timestamp ?? new Date();
    const event: UsageEvent = {
      id: options.id ?? randomUUID(),
      customer,
      type,
      timestamp: typeof moment === "string" ? moment : moment.toISOString(),
      properties: { ...properties },
    };
    this.queue.push(event);
    this.inFlight += 1;
    if (this.queue.length >= this.batchEventsMax) this.kick();
    else this.schedule();
    return event.id;
  }

  /** Wait until every event tracked so far is answered. Resolves with the report, or
   * rejects with a `DeliveryError` naming the events that failed since the last
   * `flush()`/`close()` (each failure is thrown once). */
  async flush(): Promise<DeliveryReport> {
    this.kick();
    await this.idle();
    return this.settle();
  }

  /** Flush for up to `timeoutMs` (default 30000), then give up on what is left (those
   * events count as undelivered) and stop. Rejects like `flush()`. */
  async close(options: { timeoutMs?: number } = {}): Promise<DeliveryReport> {
    process.off("beforeExit", this.atExit);
    if (!this.closed) {
      this.closed = true;
      const timeoutMs = options.timeoutMs ?? 30_000;
      this.kick();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      });
      await Promise.race([this.idle(), timedOut]);
      clearTimeout(timer);
      this.giveUp.abort();
      if (this.timer) clearTimeout(this.timer);
      await this.sending;
      this.fail(this.queue.splice(0), "undelivered", "the client closed before sending it");
      this.inFlight = 0;
      this.wakeIdle();
    }
    return this.settle();
  }

  // -- the sender's side ------------------------------------------------------------------

  private settle(): DeliveryReport {
    const failures = this.unreported;
    this.unreported = [];
    if (failures.length > 0) throw new DeliveryError(failures);
    return this.report;
  }

  private idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private wakeIdle(): void {
    if (this.inFlight > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  private schedule(): void {
    if (this.timer !== null || this.sending !== null) return;
    this.timer = setTimeout(() => this.kick(), this.flushIntervalMs);
    // A timer alone must not keep a product's process alive; see closeAtExit.
    this.timer.unref();
  }

  private kick(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.sending !== null || this.queue.length === 0) return;
    this.sending = this.drain().finally(() => {
      this.sending = null;
      if (this.queue.length > 0 && !this.giveUp.signal.aborted) this.schedule();
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.giveUp.signal.aborted) {
      const batch = this.queue.splice(0, this.batchEventsMax);
      await this.deliver(batch);
      this.inFlight -= batch.length;
      this.wakeIdle();
    }
  }

  private async deliver(batch: UsageEvent[]): Promise<void> {
    const body = JSON.stringify(batch);
    let delayMs = this.backoffInitialMs;
    let lastProblem = "";
    for (let attempt = 1; attempt <= this.attemptsMax; attempt += 1) {
      if (attempt > 1) {
        this.report.retries += 1;
        if (!(await pause(jittered(delayMs), this.giveUp.signal))) break;
        delayMs = Math.min(delayMs * 2, this.backoffMaxMs);
      }
      try {
        const response = await this.send(this.url, {
          method: "POST",
          headers: this.headers,
          body,
          signal: AbortSignal.any([this.giveUp.signal, AbortSignal.timeout(this.requestTimeoutMs)]),
        });
        const content = await response.text();
        if (!RETRYABLE_STATUS.has(response.status)) {
          this.record(batch, response.status, content);
          return;
        }
        lastProblem = `the server answered ${response.status}`;
      } catch (error) {
        lastProblem = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      }
      if (this.giveUp.signal.aborted) break;
    }
    this.fail(batch, "undelivered", `not answered (${lastProblem || "gave up"})`);
  }

  private record(batch: UsageEvent[], status: number, content: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(content);
    } catch {
      parsed = undefined;
    }
    const results = (parsed as { results?: EventOutcome[] } | undefined)?.results;
    if (!Array.isArray(results) || results.length !== batch.length) {
      // Refused whole (401, 403, 413, 415, ...): the server stored none of it.
      const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
      const reason = error ? `${error.code ?? "error"}: ${error.message ?? ""}` : content.slice(0, 200);
      this.fail(batch, "rejected", `the server answered ${status}: ${reason}`, status);
      return;
    }
    const failures: Failure[] = [];
    results.forEach((outcome, index) => {
      const event = batch[index] as UsageEvent;
      if (outcome.status === "accepted" || outcome.status === "duplicate") {
        this.report[outcome.status] += 1;
        return;
      }
      const reason =
        outcome.status === "conflict"
          ? "an event with this id and other content is already stored"
          : (outcome.errors ?? []).map((error) => `${error.field}: ${error.reason}`).join("; ");
      failures.push({
        kind: outcome.status,
        event,
        reason,
        httpStatus: status,
        ...(outcome.errors ? { errors: outcome.errors } : {}),
      });
    });
    this.reportFailures(failures);
  }

  private fail(events: UsageEvent[], kind: Failure["kind"], reason: string, httpStatus?: number): void {
    const failures = events.map((event) => ({
      kind,
      event,
      reason,
      ...(httpStatus === undefined ? {} : { httpStatus }),
    }));
    this.reportFailures(failures);
  }

  private reportFailures(failures: Failure[]): void {
    if (failures.length === 0) return;
    for (const failure of failures) this.report[failure.kind] += 1;
    this.report.failures.push(...failures);
    this.unreported.push(...failures);
    if (this.onFailure) {
      try {
        this.onFailure(failures);
      } catch (error) {
        process.emitWarning(`meterline onFailure callback threw: ${String(error)}`);
      }
    }
  }

  private closeAtExit(): void {
    if (this.closed || this.inFlight === 0) return;
    this.close({ timeoutMs: this.exitFlushTimeoutMs }).catch((error: unknown) => {
      // The process is ending: say so loudly rather than lose events quietly.
      process.emitWarning(`meterline: ${error instanceof Error ? error.message : String(error)}`);
    });
  }
}
