import { describe, expect, it } from "vitest";
import { decideScale } from "../../src/coordination/pool.js";
import type { RoundLimits, WorkerRef } from "../../src/coordination/protocol.js";
import { TeamRound } from "../../src/coordination/team-round.js";

const limits: RoundLimits = {
  taskTimeoutMs: 1000,
  attemptsMax: 3,
  retryOnError: false,
  flushIntervalMs: 5,
  flushOutcomesMax: 100,
};
const workers: WorkerRef[] = [
  { id: "w0", pid: 100 },
  { id: "w1", pid: 101 },
  { id: "w2", pid: 102 },
];

function broadcastRound(overrides: Partial<RoundLimits> = {}) {
  return new TeamRound({
    roundId: "r1",
    team: "t",
    coordinator: "lead",
    tasks: workers.map((worker, index) => ({
      taskId: `t${index}`,
      team: "t",
      worker: worker.id,
      input: index,
    })),
    workers,
    limits: { ...limits, ...overrides },
    startedAtMs: 0,
  });
}

describe("a team's round (pure core)", () => {
  it("sends each broadcast task to its own worker and settles on answers", () => {
    const round = broadcastRound();
    const dispatches = round.dispatch(0);
    expect(dispatches.map((d) => [d.taskId, d.worker.id, d.attempt])).toEqual([
      ["t0", "w0", 1],
      ["t1", "w1", 1],
      ["t2", "w2", 1],
    ]);
    for (const d of dispatches)
      expect(round.onResult({ re: d.messageId, ok: true, output: d.input }, d.worker.id, 10)).toBe(true);
    expect(round.isDone()).toBe(true);
    expect(round.takeSettled().map((o) => [o.taskId, o.ok, o.output])).toEqual([
      ["t0", true, 0],
      ["t1", true, 1],
      ["t2", true, 2],
    ]);
    expect(round.takeSettled()).toEqual([]);
  });

  it("moves the task of a dead worker to another worker and records why", () => {
    const round = broadcastRound();
    const first = round.dispatch(0);
    // w1 and w2 answer; w0 dies.
    round.onResult({ re: first[1].messageId, ok: true }, "w1", 5);
    round.onResult({ re: first[2].messageId, ok: true }, "w2", 5);
    round.checkWorkers(20, (worker) => worker.id !== "w0");
    const retry = round.dispatch(20);
    expect(retry).toHaveLength(1);
    expect(retry[0].taskId).toBe("t0");
    expect(retry[0].worker.id).not.toBe("w0");
    expect(retry[0].attempt).toBe(2);
    round.onResult({ re: retry[0].messageId, ok: true, output: "late but fine" }, retry[0].worker.id, 30);
    const outcome = round.takeSettled().find((o) => o.taskId === "t0");
    expect(outcome?.ok).toBe(true);
    expect(outcome?.attempts.map((a) => [a.worker, a.outcome])).toEqual([
      ["w0", "worker-died"],
      [retry[0].worker.id, "ok"],
    ]);
    expect(round.summary(30).retried).toBe(1);
  });

  it("times out a silent worker, retries, and fails with every attempt named when attempts run out", () => {
    const round = broadcastRound({ attemptsMax: 2 });
    const first = round.dispatch(0);
    round.onResult({ re: first[1].messageId, ok: true }, "w1", 5);
    round.onResult({ re: first[2].messageId, ok: true }, "w2", 5);
    round.checkWorkers(1000, () => true);
    const second = round.dispatch(1000);
    expect(second[0].taskId).toBe("t0");
    round.checkWorkers(2000, () => true);
    expect(round.isDone()).toBe(true);
    const failed = round.takeSettled().find((o) => o.taskId === "t0");
    expect(failed?.ok).toBe(false);
    expect(failed?.reason).toMatch(/attempt 1 on w0: no answer from w0 within 1000 ms/);
    expect(failed?.reason).toMatch(/attempt 2 on w[12]: no answer/);
  });

  it("reports a failed command with its reason and does not retry it by default", () => {
    const round = broadcastRound();
    const [d0] = round.dispatch(0);
    round.onResult({ re: d0.messageId, ok: false, exitCode: 3, error: "boom\n" }, "w0", 5);
    const outcome = round.takeSettled().find((o) => o.taskId === "t0");
    expect(outcome?.ok).toBe(false);
    expect(outcome?.reason).toBe("attempt 1 on w0: command failed: exit code 3: boom");
  });

  it("retries failed commands elsewhere when retryOnError is set", () => {
    const round = broadcastRound({ retryOnError: true });
    const [d0] = round.dispatch(0);
    round.onResult({ re: d0.messageId, ok: false, exitCode: 1 }, "w0", 5);
    expect(round.dispatch(6).some((d) => d.taskId === "t0" && d.attempt === 2)).toBe(true);
  });

  it("takes the first answer and ignores duplicates and unknown ids", () => {
    const round = broadcastRound();
    const [d0, d1, d2] = round.dispatch(0);
    round.onResult({ re: d1.messageId, ok: true }, "w1", 5);
    round.onResult({ re: d2.messageId, ok: true }, "w2", 5);
    round.checkWorkers(1000, () => true); // t0 times out on w0 …
    const retry = round.dispatch(1000).find((d) => d.taskId === "t0");
    expect(retry).toBeDefined();
    expect(round.onResult({ re: d0.messageId, ok: true, output: "w0 was slow" }, "w0", 1001)).toBe(true); // … then w0 answers
    expect(
      round.onResult(
        { re: retry?.messageId as string, ok: true, output: "dup" },
        retry?.worker.id as string,
        1002,
      ),
    ).toBe(false);
    expect(round.onResult({ re: "r1.nope.a1", ok: true }, "w0", 1003)).toBe(false);
    expect(round.takeSettled().find((o) => o.taskId === "t0")?.output).toBe("w0 was slow");
  });

  it("fails pending tasks when no worker of the team is left", () => {
    const round = broadcastRound();
    round.dispatch(0);
    round.checkWorkers(10, () => false);
    expect(round.isDone()).toBe(true);
    const outcomes = round.takeSettled();
    expect(outcomes.every((o) => !o.ok)).toBe(true);
    expect(outcomes[0].reason).toMatch(/worker w0 died \(pid 100 gone\).*no worker of team t left/);
  });

  it("survives a snapshot and restore (checkpoint) with the same decisions", () => {
    const round = broadcastRound();
    const first = round.dispatch(0);
    round.onResult({ re: first[0].messageId, ok: true, output: "a" }, "w0", 5);
    const restored = TeamRound.restore(JSON.parse(JSON.stringify(round.snapshot())));
    expect(restored.allSettled().map((o) => o.taskId)).toEqual(["t0"]);
    expect(restored.onResult({ re: first[1].messageId, ok: true }, "w1", 6)).toBe(true);
    expect(restored.onResult({ re: first[2].messageId, ok: true }, "w2", 6)).toBe(true);
    expect(restored.isDone()).toBe(true);
  });

  it("distributes items to idle workers, one at a time each", () => {
    const round = new TeamRound({
      roundId: "r2",
      team: "t",
      coordinator: "lead",
      tasks: Array.from({ length: 5 }, (_, i) => ({ taskId: `i${i}`, team: "t", input: i })),
      workers,
      limits,
      startedAtMs: 0,
    });
    const first = round.dispatch(0);
    expect(first).toHaveLength(3);
    expect(round.dispatch(1)).toHaveLength(0);
    round.onResult({ re: first[0].messageId, ok: true }, first[0].worker.id, 2);
    const next = round.dispatch(2);
    expect(next).toHaveLength(1);
    expect(next[0].worker.id).toBe(first[0].worker.id);
  });
});

describe("pool scaling (pure core)", () => {
  const base = {
    size: 5,
    spawning: 0,
    queued: 0,
    idle: [] as Array<{ id: string; idleSinceMs: number }>,
    min: 2,
    max: 10,
    nowMs: 100_000,
    idleTimeoutMs: 1000,
    stepMax: 4,
  };

  it("scales up when tasks queue and nothing is idle, within max and the step", () => {
    expect(decideScale({ ...base, queued: 3 })).toEqual({ spawn: 3, retire: [] });
    expect(decideScale({ ...base, queued: 50 })).toEqual({ spawn: 4, retire: [] });
    expect(decideScale({ ...base, size: 9, queued: 50 })).toEqual({ spawn: 1, retire: [] });
    expect(decideScale({ ...base, size: 10, queued: 50 })).toEqual({ spawn: 0, retire: [] });
    expect(decideScale({ ...base, queued: 3, spawning: 3 })).toEqual({ spawn: 0, retire: [] });
  });

  it("scales down idle agents past the timeout, never below min", () => {
    const idle = [0, 1, 2, 3, 4].map((i) => ({ id: `a${i}`, idleSinceMs: 90_000 + i }));
    expect(decideScale({ ...base, idle }).retire).toEqual(["a0", "a1", "a2"]);
    expect(decideScale({ ...base, idle: idle.map((a) => ({ ...a, idleSinceMs: 99_500 })) }).retire).toEqual(
      [],
    );
  });

  it("tops up to min", () => {
    expect(decideScale({ ...base, size: 0 }).spawn).toBe(2);
  });
});
