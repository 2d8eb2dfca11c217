// What `cfn node start` does with a data dir it cannot use as given: a path that is a file (or
// lies under one) is a typed one-line refusal, not an unexpected error with a stack; a data dir
// whose node.json proves the node ran on it, but whose Raft log or spool is gone, is refused
// instead of being recreated empty (a member without its log and vote could vote twice in a
// term). Parts a later start may create for the first time (the inbox mirror with --persistence,
// the delivery ledger of an older data dir) are not required. Real processes (the compiled CLI).

import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { TestCluster, TOKEN } from "./harness.js";

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

function listenFlags(node: TestCluster["nodes"][number]): string[] {
  return [
    "--token",
    TOKEN,
    "--peer-listen",
    `127.0.0.1:${node.spec.peerPort}`,
    "--api-listen",
    `127.0.0.1:${node.spec.apiPort}`,
  ];
}

/** One line on stderr, `cfn: CODE message`, and no stack trace. */
function expectOneLineRefusal(stderr: string, pattern: RegExp): void {
  expect(stderr).toMatch(pattern);
  expect(stderr).not.toContain("unexpected error");
  expect(stderr).not.toMatch(/^\s+at /m);
  expect(stderr.trim().split("\n")).toHaveLength(1);
}

describe("a data dir that is not a directory", () => {
  it("is refused with CFN_ERR_STORAGE naming the path, a file there or above it (exit status 1)", async () => {
    cluster = await TestCluster.create(1);
    const [n1] = cluster.nodes;
    mkdirSync(join(cluster.root, "data"), { recursive: true });
    writeFileSync(n1.spec.dataDir, "not a directory\n");
    const refused = await n1.runToExit(listenFlags(n1));
    expect(refused.code, refused.stderr).toBe(1);
    expectOneLineRefusal(
      refused.stderr,
      new RegExp(
        `^cfn: CFN_ERR_STORAGE data dir ${n1.spec.dataDir} cannot be created: it, or a directory above it, is a file`,
      ),
    );

    const below = await cluster.makeNode("n1");
    below.spec.dataDir = join(n1.spec.dataDir, "sub");
    const refusedBelow = await below.runToExit(listenFlags(below));
    expect(refusedBelow.code, refusedBelow.stderr).toBe(1);
    expectOneLineRefusal(refusedBelow.stderr, /^cfn: CFN_ERR_STORAGE data dir \S+\/sub cannot be created: /);
  });
});

describe("a data dir with node.json but a part missing", () => {
  it("refuses without raft/ or spool/, names what is missing and what to do; starts without parts a later start creates", async () => {
    cluster = await TestCluster.create(1);
    const [n1] = cluster.nodes;
    const dataDir = n1.spec.dataDir;
    await cluster.startAll();
    n1.signal("SIGTERM");
    expect(await n1.waitExit(), n1.stderr).toBe(0);
    expect(existsSync(join(dataDir, "mirror"))).toBe(false);

    // Parts a later start may create first: the mirror (--persistence the first time), the
    // delivery ledger (a data dir from before it existed).
    rmSync(join(dataDir, "delivery-in"), { recursive: true, force: true });
    const started = await n1.runToExit([...listenFlags(n1), "--persistence"]);
    expect(started.code, started.stderr).toBeNull(); // killed once it printed "started"
    expect(existsSync(join(dataDir, "mirror", "CURRENT"))).toBe(true);

    for (const part of ["raft", "spool"]) {
      const copy = join(cluster.root, `${part}.kept`);
      rmSync(copy, { recursive: true, force: true });
      // Moved away, then back: the refused start must not have recreated it.
      renameSync(join(dataDir, part), copy);
      const refused = await n1.runToExit(listenFlags(n1));
      expect(refused.code, refused.stderr).toBe(1);
      expectOneLineRefusal(
        refused.stderr,
        new RegExp(
          `^cfn: CFN_ERR_STORAGE data dir ${dataDir} has node.json \\(node "n1" started on it before\\) but no ${part}/`,
        ),
      );
      expect(refused.stderr).toContain("cfn cluster leave n1");
      expect(refused.stderr).toContain("--join");
      expect(existsSync(join(dataDir, part))).toBe(false);
      renameSync(copy, join(dataDir, part));
    }
    rmSync(join(dataDir, "raft"), { recursive: true });
    rmSync(join(dataDir, "spool"), { recursive: true });
    const both = await n1.runToExit(listenFlags(n1));
    expect(both.stderr).toMatch(/but no raft\/ and no spool\/: its Raft log and vote are gone/);
  });
});
