import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { settingsTable } from "../src/config/doc.js";
import { environmentName, loadConfig, settingPaths } from "../src/config/load.js";
import { isCfnError } from "../src/errors.js";

function tempFile(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), "cfn-config-"));
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

function expectConfigError(run: () => unknown, field: string, pattern: RegExp): void {
  try {
    run();
  } catch (error) {
    expect(isCfnError(error, "CFN_ERR_CONFIG_INVALID")).toBe(true);
    expect((error as Error).message).toContain(field);
    expect((error as Error).message).toMatch(pattern);
    return;
  }
  throw new Error("expected a configuration error");
}

describe("configuration", () => {
  it("has documented defaults", () => {
    const config = loadConfig({ env: {} });
    expect(config.profile).toBe("dev");
    expect(config.bus.shards).toBe(16);
    expect(config.bus.inboxDepthMax).toBe(1000);
    expect(config.bus.messageBytesMax).toBe(1024 * 1024);
    expect(config.bus.heartbeatIntervalMs).toBe(30_000);
  });

  it("layers defaults < profile < file < environment < flags", () => {
    const file = tempFile(
      "c.yaml",
      "profile: prod\nbus:\n  inboxDepthMax: 200\n  shards: 4\n  deliveriesMax: 3\n",
    );
    const fromFile = loadConfig({ file, env: {} });
    expect(fromFile.log.level).toBe("warn"); // from the prod profile
    expect(fromFile.bus.deliveriesMax).toBe(3); // file beats profile
    expect(fromFile.bus.inboxDepthMax).toBe(200);

    const fromEnv = loadConfig({ file, env: { CFN_BUS_INBOX_DEPTH_MAX: "700" } });
    expect(fromEnv.bus.inboxDepthMax).toBe(700);
    expect(fromEnv.bus.shards).toBe(4);

    const fromFlags = loadConfig({
      file,
      env: { CFN_BUS_INBOX_DEPTH_MAX: "700" },
      overrides: { bus: { inboxDepthMax: 900 } },
    });
    expect(fromFlags.bus.inboxDepthMax).toBe(900);
  });

  it("reads mapping settings as JSON from the environment", () => {
    const peers = { "node-2": { peerUrl: "ws://127.0.0.1:7102", apiUrl: "http://127.0.0.1:7202" } };
    expect(loadConfig({ env: { CFN_NODE_PEERS: JSON.stringify(peers) } }).node.peers).toEqual(peers);
    expectConfigError(
      () => loadConfig({ env: { CFN_NODE_PEERS: "node-2" } }),
      "node.peers",
      /record|object/i,
    );
  });

  it("reads CFN_CONFIG and JSON files", () => {
    const file = tempFile("c.json", JSON.stringify({ bus: { name: "team-a" } }));
    expect(loadConfig({ env: { CFN_CONFIG: file } }).bus.name).toBe("team-a");
  });

  it("refuses a value out of range, naming the field and the range", () => {
    expectConfigError(
      () => loadConfig({ env: { CFN_BUS_INBOX_DEPTH_MAX: "0" } }),
      "bus.inboxDepthMax",
      />=\s*1/,
    );
    expectConfigError(() => loadConfig({ env: { CFN_BUS_SHARDS: "lots" } }), "bus.shards", /number/);
  });

  it("refuses unknown settings, bad profiles and inconsistent limits", () => {
    const unknown = tempFile("u.yaml", "bus:\n  inboxDepth: 5\n");
    expectConfigError(() => loadConfig({ file: unknown, env: {} }), "bus", /inboxDepth/);
    expectConfigError(() => loadConfig({ env: { CFN_PROFILE: "qa" } }), "profile", /dev, staging, prod/);
    expectConfigError(
      () => loadConfig({ env: {}, overrides: { bus: { inboxDepthMax: 10, batchMessagesMax: 20 } } }),
      "bus.batchMessagesMax",
      /inboxDepthMax/,
    );
    expectConfigError(() => loadConfig({ env: { CFN_BUS_NAME: "../etc" } }), "bus.name", /letters/);
    // ".." matches the characters but the bus dir would be the parent of the root.
    expectConfigError(() => loadConfig({ env: { CFN_BUS_NAME: ".." } }), "bus.name", /not '\.' or '\.\.'/);
  });

  it("refuses an unreadable or unparsable file with its own code", () => {
    const broken = tempFile("b.yaml", "bus: [unclosed\n");
    for (const file of [broken, "/nonexistent/cfn.yaml"]) {
      try {
        loadConfig({ file, env: {} });
        throw new Error("expected failure");
      } catch (error) {
        expect(isCfnError(error, "CFN_ERR_CONFIG_FILE")).toBe(true);
      }
    }
  });

  it("documents every setting with its environment variable in docs/CONFIGURATION.md", () => {
    const doc = readFileSync(new URL("../docs/CONFIGURATION.md", import.meta.url), "utf8");
    for (const { path } of settingPaths()) {
      expect(doc).toContain(`\`${path.join(".")}\``);
      expect(doc).toContain(environmentName(path));
    }
    const generated = doc.split(/<!-- settings:begin.*-->\n/)[1]?.split("\n<!-- settings:end -->")[0];
    expect(generated).toBe(settingsTable());
  });
});
