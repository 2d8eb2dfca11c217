// Node settings and cluster files: validation names every bad field; a cluster file gives each
// node its listen addresses, data dir and the other founders as peers.

import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import { nodeSettingsFromFlags } from "../../src/cli/node-commands.js";
import { isCfnError } from "../../src/errors.js";
import { nodeSettingsFromClusterFile, readClusterFile } from "../../src/node/cluster-file.js";
import { ClusterNode } from "../../src/node/node.js";
import { parseNodeConfig } from "../../src/node/node-config.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { freePort, scratchDir } from "./harness.js";

function refusal(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    if (isCfnError(error)) return `${error.code} ${error.message}`;
    throw error;
  }
  throw new Error("expected a refusal");
}

describe("node settings", () => {
  it("defaults to a single-node cluster on loopback", () => {
    const config = parseNodeConfig({});
    expect(config).toMatchObject({
      id: "node-1",
      peers: {},
      join: "",
      peerListen: "127.0.0.1:7101",
      apiListen: "127.0.0.1:7201",
    });
  });

  it("names every invalid field and checks the relations between limits", () => {
    const message = refusal(() =>
      parseNodeConfig({
        id: "bad id",
        peerListen: "nowhere",
        heartbeatTicks: 20,
        electionTimeoutTicks: 10,
        clusterToken: "short",
      }),
    );
    expect(message).toContain("CFN_ERR_CONFIG_INVALID");
    for (const field of ["node.id", "node.peerListen", "node.clusterToken", "node.heartbeatTicks"])
      expect(message).toContain(field);
    expect(refusal(() => parseNodeConfig({ nodeDownAfterMs: 100, healthIntervalMs: 50 }))).toContain(
      "nodeDownAfterMs",
    );
    expect(refusal(() => parseNodeConfig({ unknownSetting: 1 }))).toContain("CFN_ERR_CONFIG_INVALID");
    // A node id names its data dir under a cluster file's dataRoot: never "." or "..".
    for (const id of [".", ".."]) expect(refusal(() => parseNodeConfig({ id }))).toContain("not '.' or '..'");
    expect(
      refusal(() =>
        parseNodeConfig({ id: "n1", peers: { n1: { peerUrl: "ws://a:1", apiUrl: "http://a:2" } } }),
      ),
    ).toContain("own peer");
  });

  it("builds settings from flags, with --set for any limit", () => {
    const settings = nodeSettingsFromFlags(
      {
        id: "n2",
        peer: ["n1=ws://10.0.0.1:7101,http://10.0.0.1:7201"],
        set: ["nodeDownAfterMs=1500", "spoolSync=true"],
        token: "x".repeat(20),
      },
      {},
    );
    const config = parseNodeConfig(settings);
    expect(config).toMatchObject({
      id: "n2",
      dataDir: "./cfn-data/n2",
      nodeDownAfterMs: 1500,
      spoolSync: true,
      peers: { n1: { peerUrl: "ws://10.0.0.1:7101", apiUrl: "http://10.0.0.1:7201" } },
    });
    expect(refusal(() => nodeSettingsFromFlags({ peer: ["n1=nope"], set: [] }, {}))).toContain("--peer");
  });
});

describe("cluster files", () => {
  it("gives each node its addresses, data dir and the other founders", () => {
    const dir = scratchDir("cfn-cluster-file-");
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, "c.yaml");
    writeFileSync(
      path,
      [
        "clusterId: demo",
        "token: a-long-enough-cluster-token",
        "dataRoot: /var/lib/cfn",
        "node: { nodeDownAfterMs: 1200 }",
        "nodes:",
        "  - { id: n1, peer: 10.0.0.1:7101, api: 10.0.0.1:7201 }",
        "  - { id: n2, peer: 10.0.0.2:7101, api: 10.0.0.2:7201 }",
      ].join("\n"),
    );
    const config = parseNodeConfig(nodeSettingsFromClusterFile(readClusterFile(path), "n2", path));
    expect(config).toMatchObject({
      id: "n2",
      clusterId: "demo",
      clusterToken: "a-long-enough-cluster-token",
      dataDir: "/var/lib/cfn/n2",
      peerListen: "10.0.0.2:7101",
      nodeDownAfterMs: 1200,
      peers: { n1: { peerUrl: "ws://10.0.0.1:7101", apiUrl: "http://10.0.0.1:7201" } },
    });
    expect(refusal(() => nodeSettingsFromClusterFile(readClusterFile(path), "n9", path))).toContain(
      "not in the cluster file",
    );
    writeFileSync(path, "clusterId: demo\nnodes: []\n");
    expect(refusal(() => readClusterFile(path))).toContain("CFN_ERR_CONFIG_INVALID");
    expect(refusal(() => readClusterFile(join(dir, "missing.yaml")))).toContain("CFN_ERR_CONFIG_FILE");
  });

  it("the example cluster files in cluster/ are valid", () => {
    for (const [file, id] of [
      ["single-node.yaml", "n1"],
      ["three-nodes.yaml", "n2"],
      ["five-hosts.yaml", "host-c"],
    ]) {
      const path = join(import.meta.dirname, "..", "..", "cluster", file);
      expect(parseNodeConfig(nodeSettingsFromClusterFile(readClusterFile(path), id, path)).id).toBe(id);
    }
  });
  it("refuses to start when a message the bus accepts could not fit in a peer frame", async () => {
    const root = scratchDir("cfn-frame-limit-");
    onTestFinished(() => rmSync(root, { recursive: true, force: true }));
    const config = parseNodeConfig({
      id: "n1",
      dataDir: join(root, "data"),
      peerListen: `127.0.0.1:${await freePort()}`,
      apiListen: `127.0.0.1:${await freePort()}`,
      frameBytesMax: 1024 * 1024,
    });
    const start = ClusterNode.start({
      config,
      bus: { root: join(root, "bus"), name: "t", messageBytesMax: 1024 * 1024 },
      logger: silentLogger,
      metrics: new Metrics(),
    });
    await expect(start).rejects.toMatchObject({
      code: "CFN_ERR_CONFIG_INVALID",
      message: expect.stringContaining("node.frameBytesMax (1048576) must be ≥ bus.messageBytesMax"),
    });
  });
});
