/** Waiting that a stop can cut short, shared by the client and the gate. */

/** Wait `delayMs`; resolves true, or false at once when `signal` aborts first. */
export function pause(delayMs: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, delayMs);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** A delay drawn at random from the upper half of `delayMs`, so many processes that
 * retry or reconnect together do not do it in step. */
export function jittered(delayMs: number): number {
  return delayMs / 2 + Math.random() * (delayMs / 2);
}
