/**
 * meterline for TypeScript: a client that batches usage events to a meterline server, the
 * access gate answering from the server's push stream, and webhook signature verification.
 */

export {
  Client,
  DeliveryError,
  type ClientOptions,
  type DeliveryReport,
  type EventOutcome,
  type Failure,
  type FieldError,
  type PropertyValue,
  type TrackOptions,
  type UsageEvent,
} from "./client.js";
export {
  ClosedError,
  InvalidOptionError,
  MeterlineError,
  QueueFullError,
  WebhookSignatureError,
} from "./errors.js";
export { Gate, STREAM_PATH, type Decision, type DecisionSource, type GateOptions, type GateStatus } from "./gate.js";
export {
  DEFAULT_TOLERANCE_S,
  EVENT_ID_HEADER,
  SIGNATURE_HEADER,
  verifySignature,
  type VerifyOptions,
  type WebhookEnvelope,
} from "./webhooks.js";
