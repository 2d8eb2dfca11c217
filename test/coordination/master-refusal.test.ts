// A round whose assign the bus would refuse (CFN_ERR_MESSAGE_TOO_LARGE) is refused before anything
// of it exists: no master checkpoint is left behind for a later `cfn swarm round --resume` to run.

import { afterEach, describe, expect, it } from "vitest";
import { Bus } from "../../src/bus/index.js";
import { FileCheckpointStore } from "../../src/coordination/checkpoint.js";
import { Master } from "../../src/coordination/master.js";
import { planTopology } from "../../src/coordination/topology.js";
import { isCfnError } from "../../src/errors.js";
import { removeRoot, tempRoot } from "./helpers.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe("a round whose assign is too large for the bus", () => {
  it("is refused with CFN_ERR_MESSAGE_TOO_LARGE, leaving no checkpoint and sending nothing", async () => {
    const root = tempRoot();
    cleanups.push(() => removeRoot(root));
    const bus = new Bus({ config: { root, name: "t", messageBytesMax: 64 * 1024 } });
    cleanups.push(() => bus.close());
    const checkpoints = new FileCheckpointStore(`${root}/checkpoints/s`);
    const plan = planTopology(
      {
        kind: "hybrid",
        teams: [
          { name: "a", workers: 2 },
          { name: "b", workers: 2 },
        ],
      },
      { swarm: "s" },
    );
    const master = new Master({ bus, id: plan.master, checkpoints });
    cleanups.push(() => master.close());
    const lead = bus.openMailbox("s.a.lead");
    cleanups.push(() => lead.close());
    // Team a's share of the items alone passes 64 KiB.
    const items = Array.from({ length: 40 }, (_, i) => "x".repeat(4_000) + i);
    const refused = await master.runRound({ plan, items, roundId: "big", timeoutMs: 5_000 }).then(
      () => undefined,
      (error: unknown) => error,
    );
    // Nothing for a later --resume to run.
    expect(checkpoints.rounds()).toEqual([]);
    expect(master.unfinishedRounds()).toEqual([]);
    expect(isCfnError(refused, "CFN_ERR_MESSAGE_TOO_LARGE"), String(refused)).toBe(true);
    expect(String((refused as Error).message)).toMatch(/assign of s\.a\.lead .* over messageBytesMax 65536/);
    expect(await lead.receive({ timeoutMs: 200, max: 10 })).toEqual([]);
  });
});
