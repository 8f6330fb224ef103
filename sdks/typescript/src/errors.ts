/**
 * The SDK's errors. Every error it throws derives from `MeterlineError`, which carries a
 * stable `code` (the same codes the Python SDK and the server use where they overlap).
 */

export class MeterlineError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The client's bounded queue is full: the server may be down. Nothing was queued. */
export class QueueFullError extends MeterlineError {
  constructor(message: string) {
    super("queue_full", message);
  }
}

/** The client or gate was closed; it takes no more work. */
export class ClosedError extends MeterlineError {
  constructor(message: string) {
    super("closed", message);
  }
}

/** An option was given a value outside its range; the message names the option. */
export class InvalidOptionError extends MeterlineError {
  constructor(message: string) {
    super("invalid_option", message);
  }
}

/** The request is not a genuine, fresh meterline webhook; the message says why. */
export class WebhookSignatureError extends MeterlineError {
  constructor(message: string) {
    super("invalid_signature", message);
  }
}
