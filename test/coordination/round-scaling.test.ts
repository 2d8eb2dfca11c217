// Work per event of a round does not grow with the round's size (counted, not timed): the team's
// pure core touches O(1) task records per dispatch / result / timer check, amortised, and a
// coordinator writes whole-round checkpoints only every n / CHECKPOINT_SPREAD changes — so a round
// of 20,000 items costs per task what one of 20 costs, where each event used to rescan every task.

import { afterEach, describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { type CheckpointStore, FileCheckpointStore } from "../../src/coordination/checkpoint.js";
import { CHECKPOINT_SPREAD, Coordinator } from "../../src/coordination/coordinator.js";
import { DEFAULT_LIMITS } from "../../src/coordination/master.js";
import {
  type AssignPayload,
  assignMessageId,
  MESSAGE,
  type PartialPayload,
  type RoundLimits,
  type TaskPayload,
} from "../../src/coordination/protocol.js";
import { type Dispatch, TeamRound } from "../../src/coordination/team-round.js";
import { removeRoot, tempRoot } from "./helpers.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Counts every task record looked up or iterated; throws past a budget (old code: n² visits). */
class CountingMap<K, V> extends Map<K, V> {
  visits = 0;
  constructor(
    source: Map<K, V>,
    private readonly budget: number,
  ) {
    super(source);
  }
  private tick(): void {
    if (++this.visits > this.budget) throw new Error(`work budget of ${this.budget} task visits exceeded`);
  }
  override get(key: K): V | undefined {
    this.tick();
    return super.get(key);
  }
  override *values(): MapIterator<V> {
    for (const value of super.values()) {
      this.tick();
      yield value;
    }
  }
}

describe("a round's work per event does not grow with its size", () => {
  it("the team core touches O(1) task records per event, amortised (20,000 items, 8 workers)", () => {
    const items = 20_000;
    const workers = Array.from({ length: 8 }, (_, i) => ({ id: `w${i}` }));
    const limits: RoundLimits = { ...DEFAULT_LIMITS, taskTimeoutMs: 1_000 };
    const round = new TeamRound({
      roundId: "r",
      team: "t",
      coordinator: "lead",
      tasks: Array.from({ length: items }, (_, i) => ({ taskId: `i${i}`, team: "t", input: i })),
      workers,
      limits,
      startedAtMs: 0,
    });
    const budget = 40 * items;
    const internals = round as unknown as { tasks: Map<string, unknown> };
    const counted = new CountingMap(internals.tasks, budget);
    internals.tasks = counted;
    let nowMs = 0;
    let settled = 0;
    let events = 0;
    // The workers' answers to come, at most one per worker: every 1,000th task's first answer is
    // late (after its timeout: the task moves to another worker, the late answer still wins).
    const answers: Array<{ atMs: number; dispatch: Dispatch }> = [];
    const schedule = (dispatches: Dispatch[]) => {
      for (const dispatch of dispatches) {
        const slow = dispatch.attempt === 1 && Number(dispatch.taskId.slice(1)) % 1000 === 7;
        answers.push({ atMs: nowMs + (slow ? 1.5 * limits.taskTimeoutMs : 1), dispatch });
      }
    };
    schedule(round.dispatch(nowMs));
    while (answers.length > 0) {
      let next = 0;
      for (let i = 1; i < answers.length; i++) if (answers[i].atMs < answers[next].atMs) next = i;
      const [{ atMs, dispatch }] = answers.splice(next, 1);
      const timeoutAt = round.nextTimeoutMs();
      if (timeoutAt !== undefined && timeoutAt < atMs) {
        // What the coordinator's timer does first.
        nowMs = timeoutAt;
        round.checkWorkers(nowMs, () => true);
        schedule(round.dispatch(nowMs));
      }
      nowMs = Math.max(nowMs, atMs);
      events++;
      // What the coordinator does on each result.
      round.onResult({ re: dispatch.messageId, ok: true, output: dispatch.input }, dispatch.worker.id, nowMs);
      schedule(round.dispatch(nowMs));
      round.nextTimeoutMs();
      round.checkWorkers(nowMs, () => true);
      settled += round.takeSettled().length;
      round.isDone();
    }
    settled += round.takeSettled().length;
    expect(round.isDone()).toBe(true);
    expect(settled).toBe(items);
    expect(round.summary(nowMs).succeeded).toBe(items);
    expect(events).toBe(items + items / 1000); // the slow ones: two answers each
    expect(round.summary(nowMs).retried).toBe(items / 1000);
    expect(round.takeSettled()).toEqual([]);
    // A constant number of task records per event (the old core: every task, per event).
    expect(counted.visits).toBeLessThanOrEqual(20 * events);
  });

  it("a coordinator checkpoints a round of n tasks O(n · CHECKPOINT_SPREAD) tasks in all, not once per batch", async () => {
    const root = tempRoot();
    cleanups.push(() => removeRoot(root));
    const bus = new Bus({ config: { root, name: "t" } });
    cleanups.push(() => bus.close());
    const items = 4_000;
    const workerIds = ["s.a.w0", "s.a.w1", "s.a.w2"];
    /** Task records serialised into checkpoints, in all. */
    let checkpointedTasks = 0;
    let writes = 0;
    const files = new FileCheckpointStore(`${root}/checkpoints`);
    const store: CheckpointStore = {
      write: (roundId, name, value) => {
        writes++;
        checkpointedTasks += (value as { team?: { tasks: unknown[] } }).team?.tasks.length ?? 0;
        files.write(roundId, name, value);
      },
      read: (roundId, name) => files.read(roundId, name),
      rounds: () => files.rounds(),
      names: (roundId) => files.names(roundId),
      remove: (roundId) => files.remove(roundId),
      has: (roundId) => files.has(roundId),
    };
    const coordinator = new Coordinator({ bus, id: "s.a.lead", checkpoints: store, isAlive: () => true });
    coordinator.start();
    cleanups.push(() => coordinator.stop());
    const master = bus.openMailbox("s.master");
    const workers = workerIds.map((id) => bus.openMailbox(id));
    cleanups.push(() => {
      master.close();
      for (const worker of workers) worker.close();
    });
    const assign: AssignPayload = {
      roundId: "big",
      parent: "s.master",
      subtree: { coordinator: "s.a.lead", name: "a", leaf: true, workers: workerIds.map((id) => ({ id })) },
      tasks: Array.from({ length: items }, (_, i) => ({ taskId: `i${i}`, team: "a", input: i })),
      limits: { ...DEFAULT_LIMITS, taskTimeoutMs: 60_000 },
      deadlineMs: Date.now() + 120_000,
    };
    bus.sendSync("s.master", "s.a.lead", {
      type: MESSAGE.assign,
      id: assignMessageId("big", "s.a.lead"),
      priority: "high",
      payload: assign,
    });
    const outcomes = new Set<string>();
    let summary = false;
    const deadline = Date.now() + 100_000;
    while ((outcomes.size < items || !summary) && Date.now() < deadline) {
      // The workers answer what they got (echo), then the master takes what came up.
      for (const [index, worker] of workers.entries()) {
        const tasks = await worker.receive({ timeoutMs: 1, max: 100 });
        for (const delivery of tasks) {
          const task = delivery.message.payload as TaskPayload;
          bus.sendSync(workerIds[index], "s.a.lead", {
            type: MESSAGE.result,
            payload: { re: delivery.message.id, ok: true, output: task.input },
          });
        }
        if (tasks.length > 0) worker.ack(tasks);
      }
      const partials = await master.receive({ timeoutMs: 1, max: 100 });
      for (const delivery of partials) {
        const partial = delivery.message.payload as PartialPayload;
        for (const outcome of partial.outcomes) outcomes.add(outcome.taskId);
        if (partial.teams.length > 0) summary = true;
      }
      if (partials.length > 0) master.ack(partials);
    }
    expect(outcomes.size).toBe(items);
    expect(summary).toBe(true);
    // About 2 · CHECKPOINT_SPREAD whole checkpoints (a dispatch and an outcome per task are the
    // changes), plus one per CHECKPOINT_INTERVAL_MAX_MS on a slow machine; the old coordinator
    // wrote one per batch of results: ~items / 3 of them here.
    expect(writes).toBeLessThan(items / 10);
    expect(checkpointedTasks).toBeLessThanOrEqual((4 * CHECKPOINT_SPREAD + 80) * items);
  }, 120_000);
});
