// Shared by the simulation test files, which split the seeds between them so vitest's forks
// use both cores. Not a test file itself (no .test suffix).
//
// Environment:
//   CFN_SIM_SEEDS=<n>   seeds to run in total over all shards (default 2,000)
//   CFN_SIM_FIRST=<n>   first seed (default 1)
//   CFN_SIM_SEED=<n>    replay one seed with its full trace (shard 0 only)

import { expect, it } from "vitest";
import { configForSeed, DEFAULT_SCALE } from "../../chaos/sim/config.js";
import { replayCommand, runSimulation, type SimResult } from "../../chaos/sim/simulation.js";

export const SHARDS = 2;
const CHUNK_SEEDS = 100;

/** Totals over a shard's runs, so a test can show the fault mix was really exercised. */
export interface Coverage {
  seeds: number;
  crashes: number;
  partitions: number;
  snapshotsInstalled: number;
  duplicated: number;
  dropped: number;
  leaders: number;
  confChangesCommitted: number;
  joins: number;
  removals: number;
  transfers: number;
  pauses: number;
  operations: number;
  unknownOutcomes: number;
  linearizabilityUnknown: number;
  safetyChecks: number;
}

function envInt(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === "") return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0)
    throw new Error(`${name} must be a non-negative integer, got ${text}`);
  return value;
}

export function replaySeed(): number | undefined {
  return envInt("CFN_SIM_SEED");
}

/** This shard's seeds: a contiguous block of the range. */
export function shardSeeds(shard: number): number[] {
  const total = envInt("CFN_SIM_SEEDS") ?? 2_000;
  const first = envInt("CFN_SIM_FIRST") ?? 1;
  const per = Math.ceil(total / SHARDS);
  const start = first + shard * per;
  const end = Math.min(first + total, start + per);
  return Array.from({ length: Math.max(0, end - start) }, (_, i) => start + i);
}

function addCoverage(coverage: Coverage, result: SimResult): void {
  coverage.seeds++;
  coverage.crashes += result.stats.crashes;
  coverage.partitions += result.stats.partitions;
  coverage.snapshotsInstalled += result.stats.snapshotsInstalled;
  coverage.duplicated += result.stats.duplicated;
  coverage.dropped += result.stats.dropped;
  coverage.leaders += result.stats.leaders;
  coverage.confChangesCommitted += result.stats.confChangesCommitted;
  coverage.joins += result.stats.joins;
  coverage.removals += result.stats.removals;
  coverage.transfers += result.stats.transfers;
  coverage.pauses += result.stats.pauses;
  coverage.operations += result.stats.operations;
  coverage.unknownOutcomes += result.stats.workload.unknown;
  if (result.linearizability === "unknown") coverage.linearizabilityUnknown++;
  coverage.safetyChecks += result.stats.safetyChecks;
}

export function emptyCoverage(): Coverage {
  return {
    seeds: 0,
    crashes: 0,
    partitions: 0,
    snapshotsInstalled: 0,
    duplicated: 0,
    dropped: 0,
    leaders: 0,
    confChangesCommitted: 0,
    joins: 0,
    removals: 0,
    transfers: 0,
    pauses: 0,
    operations: 0,
    unknownOutcomes: 0,
    linearizabilityUnknown: 0,
    safetyChecks: 0,
  };
}

/** Registers one vitest test per chunk of this shard's seeds; failures list every failing seed. */
export function registerSeedChunks(shard: number, coverage: Coverage): void {
  const seeds = shardSeeds(shard);
  for (let i = 0; i < seeds.length; i += CHUNK_SEEDS) {
    const chunk = seeds.slice(i, i + CHUNK_SEEDS);
    const name = `seeds ${chunk[0]}..${chunk[chunk.length - 1]} keep Raft safe, live and linearizable`;
    it(
      name,
      () => {
        const failures: SimResult[] = [];
        for (const seed of chunk) {
          const result = runSimulation(configForSeed(seed, DEFAULT_SCALE));
          addCoverage(coverage, result);
          if (!result.ok) failures.push(result);
        }
        if (failures.length > 0) {
          const list = failures.map((f) => `${f.seed} (${f.failure?.property})`).join(", ");
          const reports = failures
            .slice(0, 3)
            .map((f) => f.report)
            .join("\n\n");
          console.error(`failing seeds: ${list}\n\n${reports}`);
          expect.fail(
            `${failures.length} seeds failed: ${list}\nreplay: ${replayCommand(failures[0]?.seed ?? 0)}`,
          );
        }
      },
      // Generous: a chunk takes a few seconds; the limit only catches a hung run.
      CHUNK_SEEDS * 2_000,
    );
  }
}

/** Registers the replay of CFN_SIM_SEED: the full trace is printed, the result asserted. */
export function registerReplay(seed: number): void {
  it(`replay of seed ${seed}`, () => {
    const lines: string[] = [];
    const result = runSimulation(configForSeed(seed, DEFAULT_SCALE), {
      fullTrace: true,
      onTrace: (l) => lines.push(l),
    });
    console.log(lines.join("\n"));
    console.log(
      `seed ${seed}: ${result.ok ? "ok" : "FAILED"} trace ${result.traceHash} ${JSON.stringify(result.stats)}`,
    );
    if (!result.ok) console.error(result.report);
    expect(result.failure).toBeUndefined();
  }, 600_000);
}

/** Asserts the shard's runs exercised every kind of fault (so a green run means something). */
export function registerCoverageCheck(coverage: Coverage): void {
  it("exercised crashes, partitions, snapshots, loss, duplication, elections, membership, pauses and clients", () => {
    if (coverage.seeds < 50) return; // a short custom run (CFN_SIM_SEEDS small) proves little either way
    expect(coverage.crashes).toBeGreaterThan(coverage.seeds);
    expect(coverage.partitions).toBeGreaterThan(coverage.seeds);
    expect(coverage.snapshotsInstalled).toBeGreaterThan(coverage.seeds / 10);
    expect(coverage.duplicated).toBeGreaterThan(coverage.seeds);
    expect(coverage.dropped).toBeGreaterThan(coverage.seeds);
    expect(coverage.leaders).toBeGreaterThan(coverage.seeds * 1.5);
    expect(coverage.confChangesCommitted).toBeGreaterThan(coverage.seeds / 5);
    expect(coverage.joins).toBeGreaterThan(coverage.seeds / 10);
    expect(coverage.removals).toBeGreaterThan(coverage.seeds / 20);
    expect(coverage.transfers).toBeGreaterThan(coverage.seeds / 10);
    expect(coverage.pauses).toBeGreaterThan(coverage.seeds / 2);
    expect(coverage.operations).toBeGreaterThan(coverage.seeds * 20);
    expect(coverage.unknownOutcomes).toBeGreaterThan(0);
    // The checker must decide nearly every history; "unknown" is allowed, but rarely.
    expect(coverage.linearizabilityUnknown).toBeLessThan(Math.max(1, coverage.seeds / 100));
    console.log(`coverage: ${JSON.stringify(coverage)}`);
  });
}
