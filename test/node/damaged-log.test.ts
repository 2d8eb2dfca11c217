// A node whose Raft log was damaged while it was stopped refuses to start instead of starting on a
// silently rolled-back term, vote and log (LevelDB drops a damaged block without an error);
// --salvage-damaged-logs starts it anyway, logging the damage and keeping a copy of the log.

import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { api, TestCluster, TOKEN, waitFor } from "./harness.js";

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

describe("a damaged write-ahead log", () => {
  it("refuses the start, names the file; salvaging starts and keeps a copy", async () => {
    cluster = await TestCluster.create(1);
    const [n1] = cluster.nodes;
    await cluster.startAll();
    for (let index = 0; index < 40; index++) {
      const registered = await api(n1.api, "POST", "/v1/agents", { agent: `a${index}`, team: null });
      expect(registered.status).toBe(200);
    }
    n1.signal("SIGTERM");
    expect(await n1.waitExit(), n1.stderr).toBe(0);

    const raftDir = join(n1.spec.dataDir, "raft");
    const logs = readdirSync(raftDir).filter((name) => name.endsWith(".log"));
    expect(logs).toHaveLength(1);
    const log = join(raftDir, logs[0]);
    const bytes = readFileSync(log);
    bytes[Math.floor(statSync(log).size / 3)] ^= 0xff;
    writeFileSync(log, bytes);

    const flags = ["--token", TOKEN, "--peer-listen", `127.0.0.1:${n1.spec.peerPort}`];
    const apiFlags = ["--api-listen", `127.0.0.1:${n1.spec.apiPort}`];
    const refused = await n1.runToExit([...flags, ...apiFlags]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/CFN_ERR_STORAGE .*raft.*write-ahead log is damaged \(\d+\.log: /);
    expect(refused.stderr).toContain("--salvage-damaged-logs");
    expect(readFileSync(log).equals(bytes)).toBe(true); // untouched: LevelDB never replayed it

    await n1.start(["--salvage-damaged-logs"]);
    await cluster.waitReady([n1]);
    expect(n1.stderr).toMatch(/salvaging a damaged write-ahead log/);
    expect(readdirSync(raftDir).some((name) => name.startsWith(`${logs[0]}.damaged-`))).toBe(true);
    // Serving again (what the damaged block held is gone: that is what salvaging accepts).
    await waitFor("a registration after salvaging", async () => {
      const registered = await api(n1.api, "POST", "/v1/agents", { agent: "after", team: null });
      return registered.status === 200;
    });
  });
});
