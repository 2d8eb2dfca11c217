// Trace spans of coordination (docs/COORDINATION.md, "Tracing"): the master opens `cfn.round`, a
// team coordinator `cfn.team` under it, `cfn agent run` a `cfn.task` under that; the W3C context
// rides in the bus messages' headers (and in the assign payload, so a resumed master or a moved
// coordinator continues the same trace). With @opentelemetry/api alone (no SDK started) the tracer
// is a no-op and no headers are produced: a function call per round, team and task.

import { type Attributes, type Context, type Span, SpanStatusCode, trace } from "@opentelemetry/api";
import { contextFromHeaders, traceHeaders } from "../obs/trace-headers.js";

const TRACER_NAME = "cfn-coordination";

/** A span and the headers that continue it in messages sent on its behalf (empty when off). */
export interface TracedStep {
  span: Span;
  headers: Record<string, string> | undefined;
}

/** Starts `name` as a child of the context carried by `parentHeaders` (a new trace when none). */
export function startStep(
  name: "cfn.round" | "cfn.team" | "cfn.task",
  parentHeaders: Record<string, string> | undefined,
  attributes: Attributes,
): TracedStep & { context: Context } {
  const parent = contextFromHeaders(parentHeaders);
  const span = trace.getTracer(TRACER_NAME).startSpan(name, { attributes }, parent);
  const context = trace.setSpan(parent, span);
  if (!span.isRecording()) return { span, headers: parentHeaders, context };
  const headers = traceHeaders(context);
  return { span, headers: Object.keys(headers).length > 0 ? headers : undefined, context };
}

/** Ends a step with its outcome. */
export function endStep(step: TracedStep | undefined, attributes: Attributes, error?: string): void {
  if (!step) return;
  step.span.setAttributes(attributes);
  if (error) step.span.setStatus({ code: SpanStatusCode.ERROR, message: error });
  step.span.end();
}
