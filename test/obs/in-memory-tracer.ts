// A real OpenTelemetry tracer provider with an in-memory exporter, installed globally for one test
// file (W3C propagator; optionally the async-hooks context manager, for code that relies on the
// active context across awaits) and removed after it.

import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll } from "vitest";

export interface InMemoryTracer {
  exporter: InMemorySpanExporter;
  provider: BasicTracerProvider;
}

/** Registers beforeAll/afterAll hooks in the calling test file; spans land in `exporter`. */
export function useInMemoryTracer(options: { asyncContext?: boolean } = {}): InMemoryTracer {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  beforeAll(() => {
    if (options.asyncContext) context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    trace.setGlobalTracerProvider(provider);
  });
  afterAll(() => {
    trace.disable();
    propagation.disable();
    if (options.asyncContext) context.disable();
  });
  return { exporter, provider };
}
