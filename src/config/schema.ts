// The one validated configuration of cfn. Every setting has a unit in its name where it has one,
// a default, and a range; docs/CONFIGURATION.md lists them all (test/config.test.ts checks that
// every leaf here appears there).

import { tmpdir } from "node:os";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";

const MiB = 1024 * 1024;

/** /dev/shm where it exists (Linux), else the OS temp dir (macOS, Windows). */
export function defaultBusRoot(): string {
  return existsSync("/dev/shm") ? "/dev/shm/cfn-coordination" : join(tmpdir(), "cfn-coordination");
}

const int = (min: number, max: number) => z.number().int().min(min).max(max);

export const busSchema = z
  .object({
    /** Root under which each bus has its directory. */
    root: z.string().min(1).default(defaultBusRoot()),
    /** Name of this bus; its directory is <root>/<name>. */
    name: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,64}$/, "letters, digits, '.', '_' or '-', 1 to 64 characters")
      .default("default"),
    /** Shard directories agent dirs are spread over. */
    shards: int(1, 4096).default(16),
    /** Messages an inbox holds (queued + claimed) before sends are refused with INBOX_FULL. */
    inboxDepthMax: int(1, 1_000_000).default(1000),
    /** Largest encoded message accepted, in bytes. */
    messageBytesMax: int(256, 64 * MiB).default(MiB),
    /** Largest number of messages in one batch file. */
    batchMessagesMax: int(1, 100_000).default(1000),
    /** A claimed message not acknowledged within this time is redelivered. */
    visibilityTimeoutMs: int(100, 86_400_000).default(30_000),
    /** Deliveries before a message goes to dead-letter. */
    deliveriesMax: int(1, 1000).default(5),
    /** How often an agent refreshes its liveness mark. */
    heartbeatIntervalMs: int(100, 3_600_000).default(30_000),
    /** Longest a send may wait for room in a full inbox when the caller asks to wait. */
    sendWaitMsMax: int(0, 3_600_000).default(30_000),
    /** Rescan interval of a waiting receiver, a safety net under fs.watch. */
    rescanIntervalMs: int(1, 60_000).default(250),
  })
  .strict();

export const metricsSchema = z
  .object({
    /** JSONL metrics stream; empty disables it. */
    jsonlPath: z.string().default(""),
    /** Port of the HTTP /metrics endpoint of a node; 0 picks a free port. */
    httpPort: int(0, 65_535).default(9464),
  })
  .strict();

export const logSchema = z
  .object({
    level: z.enum(["debug", "info", "warn", "error", "silent"]).default("info"),
  })
  .strict();

export const demoSchema = z
  .object({
    /** Agents the demo spawns. */
    agents: int(1, 100_000).default(100),
    /** Teams of the hybrid topology; 1 is flat. */
    teams: int(1, 1000).default(4),
    /** Deadline of one coordination round. */
    roundTimeoutMs: int(100, 3_600_000).default(30_000),
  })
  .strict();

export const configSchema = z
  .object({
    profile: z.enum(["dev", "staging", "prod"]).default("dev"),
    bus: busSchema.default(busSchema.parse({})),
    metrics: metricsSchema.default(metricsSchema.parse({})),
    log: logSchema.default(logSchema.parse({})),
    demo: demoSchema.default(demoSchema.parse({})),
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
