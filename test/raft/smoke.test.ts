import { describe, expect, it } from "vitest";
import { MemoryStorage, type Message, RawNode } from "../../src/raft/index.js";

function cluster(ids: string[]) {
  const nodes = new Map<string, { node: RawNode; storage: MemoryStorage; applied: string[] }>();
  for (const id of ids) {
    const storage = MemoryStorage.bootstrap({ voters: ids });
    nodes.set(id, { node: new RawNode({ config: { id }, storage }), storage, applied: [] });
  }
  const pump = () => {
    for (let round = 0; round < 1000; round++) {
      const outbox: Message[] = [];
      for (const { node, storage, applied } of nodes.values()) {
        while (node.hasReady()) {
          const rd = node.ready();
          if (rd.snapshot) storage.applySnapshot(rd.snapshot);
          storage.append(rd.entries);
          if (rd.hardState) storage.setHardState(rd.hardState);
          outbox.push(...rd.messages);
          for (const e of rd.committedEntries)
            if (e.data.length > 0 && e.type === 0) applied.push(new TextDecoder().decode(e.data));
          node.advance();
        }
      }
      if (outbox.length === 0) return;
      for (const m of outbox) nodes.get(m.to)!.node.step(m);
    }
    throw new Error("did not settle");
  };
  return { nodes, pump };
}

describe("raft smoke", () => {
  it("elects a leader and replicates", () => {
    const { nodes, pump } = cluster(["a", "b", "c"]);
    nodes.get("a")!.node.campaign();
    pump();
    expect(nodes.get("a")!.node.status().role).toBe("leader");
    nodes.get("a")!.node.propose(new TextEncoder().encode("x"));
    nodes.get("b")!.node.propose(new TextEncoder().encode("y"));
    pump();
    for (const { applied } of nodes.values()) expect(applied).toEqual(["x", "y"]);
    for (let i = 0; i < 30; i++) {
      for (const { node } of nodes.values()) node.tick();
      pump();
    }
    expect(nodes.get("a")!.node.status().role).toBe("leader");
  });
});
