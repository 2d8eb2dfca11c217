// `npm run bench -- security [--runs 7]`: the cost of security on the API and storage paths, as
// CPU time per operation (process.cpuUsage, steady on a shared machine) where the work is CPU, and
// wall time where it is the disk (audit fsync):
//   token-check-cpu      authenticate an API token among 100 (parse, SHA-256, constant-time
//                        compare) and resolve its roles to permissions — added to every request
//   seal-open-cpu-1kib   AES-256-GCM seal + open of a 1 KiB record (mirror, spool)
//   audit-append-rate    entries/s made durable by 2,000 concurrent appends (group commit, fsync)
//   audit-append-ms      one append at a time until durable (a synced batch each), p50 and p99
// Targets are this repo's own (docs/SECURITY.md): security must stay a small share of a request.

import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "../../src/obs/logger.js";
import { AuditLog, type AuditRecord } from "../../src/security/audit-log.js";
import { permissionsOf, TOKEN_POLICY_PREFIX } from "../../src/security/permissions.js";
import { RecordCipher } from "../../src/security/record-cipher.js";
import { mintToken, verifyToken } from "../../src/security/tokens.js";
import { atLeast, atMost, type Figure, round, type SuiteResult, stats } from "../lib.js";

function option(args: string[], name: string, fallback: number): number {
  const index = args.indexOf(name);
  return index >= 0 ? Number(args[index + 1]) : fallback;
}

function cpuMicros(work: () => void): number {
  const before = process.cpuUsage();
  work();
  const used = process.cpuUsage(before);
  return used.user + used.system;
}

function tokenCheckMicros(operations: number): number {
  const now = new Date();
  const policies = new Map<string, unknown>();
  const tokens: string[] = [];
  for (let i = 0; i < 100; i++) {
    const minted = mintToken(`p${i}`, ["operator"], "bench", now);
    policies.set(`${TOKEN_POLICY_PREFIX}${minted.id}`, minted.record);
    tokens.push(minted.token);
  }
  let granted = 0;
  const micros = cpuMicros(() => {
    for (let i = 0; i < operations; i++) {
      const verified = verifyToken(tokens[i % tokens.length], policies, now);
      if (verified.ok && permissionsOf(verified.record.roles, policies).has("swarm.write")) granted++;
    }
  });
  if (granted !== operations) throw new Error("token check bench: a valid token was refused");
  return micros / operations;
}

function sealOpenMicros(operations: number): number {
  const cipher = new RecordCipher(randomBytes(32));
  const text = JSON.stringify({ id: "m", payload: "x".repeat(1000) });
  return (
    cpuMicros(() => {
      for (let i = 0; i < operations; i++) {
        const key = `o!n2!${i}`;
        if (cipher.open(cipher.seal(text, key), key).length !== text.length) throw new Error("round trip");
      }
    }) / operations
  );
}

function record(i: number): AuditRecord {
  return {
    node: "bench",
    requestId: `r${i}`,
    principal: "alice",
    action: "POST /v1/agents",
    outcome: "ok",
    status: 200,
    remote: "127.0.0.1",
    detail: { agent: `a${i}` },
  };
}

async function auditRun(
  concurrent: number,
  sequential: number,
): Promise<{ rate: number; latenciesMs: number[] }> {
  const dir = mkdtempSync(join(tmpdir(), "cfn-bench-audit-"));
  try {
    const log = await AuditLog.open({
      path: join(dir, "audit"),
      logger: silentLogger,
      retentionDays: 30,
      entriesMax: 1_000_000,
      batchEntriesMax: 256,
    });
    const started = process.hrtime.bigint();
    await Promise.all(Array.from({ length: concurrent }, (_, i) => log.append(record(i))));
    const rate = concurrent / (Number(process.hrtime.bigint() - started) / 1e9);
    const latenciesMs: number[] = [];
    for (let i = 0; i < sequential; i++) {
      const begin = process.hrtime.bigint();
      await log.append(record(concurrent + i));
      latenciesMs.push(Number(process.hrtime.bigint() - begin) / 1e6);
    }
    if (!(await log.verify()).ok) throw new Error("audit bench: chain does not verify");
    await log.close();
    return { rate, latenciesMs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(args: string[]): Promise<SuiteResult> {
  const runs = option(args, "--runs", 7);
  const tokenChecks: number[] = [];
  const sealOpens: number[] = [];
  const rates: number[] = [];
  const latencies: number[] = [];
  tokenCheckMicros(2_000); // warm-up (JIT)
  sealOpenMicros(2_000);
  for (let i = 0; i < runs; i++) {
    tokenChecks.push(tokenCheckMicros(20_000));
    sealOpens.push(sealOpenMicros(20_000));
    const audit = await auditRun(2_000, 100);
    rates.push(audit.rate);
    latencies.push(...audit.latenciesMs);
  }
  const token = stats(tokenChecks);
  const seal = stats(sealOpens);
  const rate = stats(rates);
  const latency = stats(latencies);
  const figures: Figure[] = [
    atMost("token-check-cpu", token.p50, "µs/request", 10, { p99: round(token.p99), runs }),
    atMost("seal-open-cpu-1kib", seal.p50, "µs/record", 20, { p99: round(seal.p99), runs }),
    atLeast("audit-append-rate", rate.p50, "entries/s", 5_000, { p99Low: round(Math.min(...rates)), runs }),
    atMost("audit-append-ms", latency.p50, "ms", 10, { p99: round(latency.p99), samples: latency.count }),
  ];
  return {
    suite: "security",
    figures,
    context: { cpus: cpus().length, loadavg: loadavg().map((value) => round(value, 2)), auditDir: tmpdir() },
  };
}
