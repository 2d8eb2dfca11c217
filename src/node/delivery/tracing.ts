// OpenTelemetry around cross-node delivery, through @opentelemetry/api only: without a started SDK
// every call is a no-op. The W3C trace context (`traceparent`, `tracestate`) rides unchanged in a
// message's headers; a span is made only for messages that carry one, so untraced traffic pays one
// property lookup per message.

import { type Context, propagation, ROOT_CONTEXT, type Span, SpanStatusCode } from "@opentelemetry/api";

export const TRACER_NAME = "cfn.node.delivery";

/** The context a message's headers continue, or undefined when the message is not traced. */
export function spanParent(headers: Record<string, string>): Context | undefined {
  if (headers.traceparent === undefined) return undefined;
  return propagation.extract(ROOT_CONTEXT, headers);
}

/** Ends spans of a failed step, recording why. */
export function endSpansWithError(spans: Span[], error: unknown): void {
  for (const span of spans) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
    span.end();
  }
}
