// W3C trace context in bus message headers: the sender injects `traceparent` (and `tracestate`,
// `baggage`) into a message's string headers; the receiver continues the trace from them. This is
// how one coordination round stays one trace across the bus, the WebSocket hop and processes.
// Both work through the globally registered propagator (src/obs/tracing.ts); with tracing off they
// return no headers and the root context, at the cost of a function call.

import { type Context, context, propagation, ROOT_CONTEXT } from "@opentelemetry/api";

/** Headers carrying the trace context of `from` (the active context by default). */
export function traceHeaders(from: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(from, carrier);
  return carrier;
}

/** The context a received message's headers continue; the root context when they carry none. */
export function contextFromHeaders(
  headers: Record<string, string> | undefined,
  base: Context = ROOT_CONTEXT,
): Context {
  if (!headers) return base;
  return propagation.extract(base, headers);
}
