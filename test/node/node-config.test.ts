// Node settings and cluster files: validation names every bad field; a cluster file gives each
// node its listen addresses, data dir and the other founders as peers.

import { existsSync, rmSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import { nodeSettingsFromFlags } from "../../src/cli/node-commands.js";
import { nodeSettingsFromClusterFile, readClusterFile } from "../../src/node/cluster-file.js";
import { ClusterNode } from "../../src/node/node.js";
import { parseNodeConfig, SINGLE_NODE_TOKEN } from "../../src/node/node-config.js";
import { silentLogger } from "../../src/obs/logger.js";
import { Metrics } from "../../src/obs/metrics.js";
import { freePort, refusal, scratchDir } from "./harness.js";

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

  it("refuses the single-node default token for a node with peers or --join", () => {
    const peers = { n1: { peerUrl: "ws://10.0.0.1:7101", apiUrl: "http://10.0.0.1:7201" } };
    for (const settings of [
      { id: "n2", peers },
      { id: "n2", join: "http://10.0.0.1:7201" },
    ]) {
      const message = refusal(() => parseNodeConfig(settings));
      expect(message).toContain("node.clusterToken");
      expect(message).toContain("single-node default");
    }
    expect(parseNodeConfig({ id: "n2", peers, clusterToken: "y".repeat(20) }).peers).toEqual(peers);
    expect(parseNodeConfig({}).clusterToken).toBe("cfn-single-node-local-token"); // alone: fine
  });

  it("says host:port is expected for a listen address without a port, and names a port past 65535", () => {
    const noPort = refusal(() => parseNodeConfig({ peerListen: "nohost" }));
    expect(noPort).toContain("node.peerListen: host:port expected");
    expect(noPort).not.toContain("65535");
    expect(refusal(() => parseNodeConfig({ apiListen: "127.0.0.1:70000" }))).toContain(
      "node.apiListen: port ≤ 65535",
    );
  });

  it("names an unknown setting by its key", () => {
    expect(refusal(() => parseNodeConfig({ bogus: 1 }))).toContain("node.bogus:");
  });

  it("keeps a configured data dir (file or CFN_NODE_DATA_DIR) with --id; only the default becomes ./cfn-data/<id>", () => {
    const flags = { id: "n6", peer: [], set: [] };
    expect(nodeSettingsFromFlags(flags, {}, { dataDir: "/var/lib/cfn/data" }).dataDir).toBeUndefined();
    expect(nodeSettingsFromFlags(flags, {}, { dataDir: "./cfn-data/node-1" }).dataDir).toBe("./cfn-data/n6");
    expect(
      nodeSettingsFromFlags({ ...flags, dataDir: "/x" }, {}, { dataDir: "/var/lib/cfn/data" }).dataDir,
    ).toBe("/x");
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
    // tokenEnv naming an unset variable: refused (the default token would go out), unless a
    // token is given another way.
    const withEnv = join(dir, "env.yaml");
    writeFileSync(
      withEnv,
      [
        "clusterId: demo",
        "tokenEnv: CFN_TEST_UNSET_TOKEN",
        "nodes:",
        "  - { id: n1, peer: 10.0.0.1:7101, api: 10.0.0.1:7201 }",
        "  - { id: n2, peer: 10.0.0.2:7101, api: 10.0.0.2:7201 }",
      ].join("\n"),
    );
    const flags = { id: "n1", clusterFile: withEnv, peer: [], set: [] };
    expect(refusal(() => nodeSettingsFromFlags(flags, {}))).toContain(
      "tokenEnv CFN_TEST_UNSET_TOKEN is not set",
    );
    const token = "z".repeat(20);
    expect(nodeSettingsFromFlags(flags, { CFN_TEST_UNSET_TOKEN: token }).clusterToken).toBe(token);
    expect(nodeSettingsFromFlags(flags, { CFN_CLUSTER_TOKEN: token }).clusterToken).toBe(token);
    writeFileSync(path, "clusterId: demo\nnodes: []\n");
    expect(refusal(() => readClusterFile(path))).toContain("CFN_ERR_CONFIG_INVALID");
    expect(refusal(() => readClusterFile(join(dir, "missing.yaml")))).toContain("CFN_ERR_CONFIG_FILE");
  });

  it("a one-node cluster file runs on the single-node default when its tokenEnv is unset", () => {
    const path = join(import.meta.dirname, "..", "..", "cluster", "single-node.yaml");
    const settings = nodeSettingsFromFlags({ id: "n1", clusterFile: path, peer: [], set: [] }, {});
    expect(parseNodeConfig(settings)).toMatchObject({
      id: "n1",
      clusterId: "local",
      clusterToken: SINGLE_NODE_TOKEN,
      peers: {},
    });
    // Joining another node it needs the cluster's secret.
    const joining = { id: "n1", clusterFile: path, join: "http://10.0.0.1:7201", peer: [], set: [] };
    expect(refusal(() => nodeSettingsFromFlags(joining, {}))).toContain(
      "tokenEnv CFN_CLUSTER_TOKEN is not set",
    );
  });

  it("the example cluster files in cluster/ are valid", () => {
    for (const [file, id] of [
      ["single-node.yaml", "n1"],
      ["three-nodes.yaml", "n2"],
      ["five-hosts.yaml", "host-c"],
    ]) {
      const path = join(import.meta.dirname, "..", "..", "cluster", file);
      // As their comments say: with the token in the variable their tokenEnv names.
      const env = { CFN_CLUSTER_TOKEN: "an-operator-chosen-secret" };
      expect(parseNodeConfig(nodeSettingsFromClusterFile(readClusterFile(path), id, path, env)).id).toBe(id);
    }
  });
  it("refuses to start on a listen address in use before it writes anything to the data dir", async () => {
    const root = scratchDir("cfn-listen-in-use-");
    onTestFinished(() => rmSync(root, { recursive: true, force: true }));
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    onTestFinished(() => new Promise<void>((resolve) => taken.close(() => resolve())));
    const dataDir = join(root, "data", "other");
    const config = parseNodeConfig({
      id: "other",
      dataDir,
      peerListen: `127.0.0.1:${await freePort()}`,
      apiListen: `127.0.0.1:${(taken.address() as AddressInfo).port}`,
    });
    const start = ClusterNode.start({
      config,
      bus: { root: join(root, "bus"), name: "t" },
      logger: silentLogger,
      metrics: new Metrics(),
    });
    await expect(start).rejects.toMatchObject({
      code: "CFN_ERR_CONFIG_INVALID",
      message: expect.stringMatching(/cannot listen: node\.apiListen .*EADDRINUSE/),
    });
    expect(existsSync(dataDir)).toBe(false);
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
