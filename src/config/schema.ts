// The one validated configuration of cfn. Every setting has a unit in its name where it has one,
// a default, and a range; docs/CONFIGURATION.md lists them all (test/config.test.ts checks that
// every leaf here appears there).

import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { jsonlPathProblem } from "../obs/jsonl-path.js";
import { securitySchema } from "../security/config.js";
import { coordinationSchema, poolSchema, spawnSchema } from "./coordination-schema.js";
import { nodeSchema } from "./node-schema.js";
import { tracingSchema } from "./tracing-schema.js";

const MiB = 1024 * 1024;

/** /dev/shm where it exists (Linux), else the OS temp dir (macOS, Windows). */
export function defaultBusRoot(): string {
  return existsSync("/dev/shm") ? "/dev/shm/cfn-coordination" : join(tmpdir(), "cfn-coordination");
}

const int = (min: number, max: number) => z.number().int().min(min).max(max);

export const busSchema = z
  .object({
    root: z
      .string()
      .min(1)
      .default(defaultBusRoot())
      .describe("Root under which each bus has its directory."),
    name: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,64}$/, "letters, digits, '.', '_' or '-', 1 to 64 characters")
      .refine(
        (name) => name !== "." && name !== "..",
        "not '.' or '..' (the bus dir would be the root or above it)",
      )
      .default("default")
      .describe("Name of this bus; its directory is <root>/<name>."),
    shards: int(1, 4096).default(16).describe("Shard directories agent dirs are spread over."),
    inboxDepthMax: int(1, 1_000_000)
      .default(1000)
      .describe("Messages an inbox holds (queued + claimed) before sends are refused with INBOX_FULL."),
    messageBytesMax: int(256, 64 * MiB)
      .default(MiB)
      .describe("Largest encoded message accepted, in bytes."),
    batchMessagesMax: int(1, 100_000).default(100).describe("Largest number of messages in one batch file."),
    visibilityTimeoutMs: int(100, 86_400_000)
      .default(30_000)
      .describe("A claimed message not acknowledged within this time is redelivered."),
    deliveriesMax: int(1, 1000).default(5).describe("Deliveries before a message goes to dead-letter."),
    heartbeatIntervalMs: int(100, 3_600_000)
      .default(30_000)
      .describe("How often an agent refreshes its liveness mark."),
    sendWaitMsMax: int(0, 3_600_000)
      .default(30_000)
      .describe("Longest a send may wait for room in a full inbox when the caller asks to wait."),
    rescanIntervalMs: int(1, 60_000)
      .default(250)
      .describe("Rescan interval of a waiting receiver, a safety net under fs.watch."),
    nativeIo: z
      .boolean()
      .default(true)
      .describe(
        "Use the compiled file helper (dist/native/bus-io.node) for send, claim and ack when it is built; false always uses node:fs (same files).",
      ),
  })
  .strict();

export const metricsSchema = z
  .object({
    jsonlPath: z
      .string()
      .superRefine((path, ctx) => {
        // Checked against the file system now, so a bad path fails at start, not at the first event.
        const problem = path === "" ? undefined : jsonlPathProblem(path);
        if (problem) ctx.addIssue({ code: "custom", message: problem });
      })
      .default("")
      .describe(
        "JSONL metrics stream; empty disables it. A file (created with its directories), not a directory, and not under /proc or /sys. (Prometheus: a node's GET /metrics on node.apiListen.)",
      ),
  })
  .strict();

export const logSchema = z
  .object({
    level: z
      .enum(["debug", "info", "warn", "error", "silent"])
      .default("info")
      .describe("Lowest level of log lines written to stderr."),
  })
  .strict();

export const demoSchema = z
  .object({
    agents: int(1, 100_000).default(100).describe("Agents the demo spawns."),
    teams: int(1, 1000).default(4).describe("Teams of the hybrid topology; 1 is flat."),
    roundTimeoutMs: int(100, 3_600_000).default(30_000).describe("Deadline of one coordination round."),
  })
  .strict();

export const configSchema = z
  .object({
    profile: z
      .enum(["dev", "staging", "prod"])
      .default("dev")
      .describe("Preset layered under file, environment and flags."),
    bus: busSchema.default(busSchema.parse({})),
    metrics: metricsSchema.default(metricsSchema.parse({})),
    log: logSchema.default(logSchema.parse({})),
    demo: demoSchema.default(demoSchema.parse({})),
    node: nodeSchema.default(nodeSchema.parse({})),
    coordination: coordinationSchema.default(coordinationSchema.parse({})),
    pool: poolSchema.default(poolSchema.parse({})),
    spawn: spawnSchema.default(spawnSchema.parse({})),
    security: securitySchema.default(securitySchema.parse({})),
    tracing: tracingSchema.default(tracingSchema.parse({})),
  })
  .strict()
  .superRefine((config, ctx) => {
    if (config.bus.batchMessagesMax > config.bus.inboxDepthMax) {
      ctx.addIssue({
        code: "custom",
        path: ["bus", "batchMessagesMax"],
        message: `must be ≤ bus.inboxDepthMax (${config.bus.inboxDepthMax}): a batch larger than an inbox can never be delivered`,
      });
    }
    if (config.bus.heartbeatIntervalMs > config.bus.visibilityTimeoutMs * 10) {
      ctx.addIssue({
        code: "custom",
        path: ["bus", "heartbeatIntervalMs"],
        message: "must be ≤ 10 × bus.visibilityTimeoutMs",
      });
    }
  });

export type Config = z.infer<typeof configSchema>;
export type BusConfig = z.infer<typeof busSchema>;

/** Profile presets, applied over the defaults and under file, environment and flags. */
export const PROFILES: Record<Config["profile"], DeepPartial<Config>> = {
  dev: { log: { level: "info" } },
  staging: { log: { level: "info" }, bus: { deliveriesMax: 5 } },
  prod: { log: { level: "warn" }, bus: { deliveriesMax: 10 } },
};

export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };
