// Encryption at rest on a real node: mirrored messages are sealed on disk (AES-256-GCM), a host
// restart restores them in clear into the inboxes, a record altered on disk is dead-lettered with
// its reason (the rest restored, the node serving), a missing or wrong key refuses the start with
// CFN_ERR_KEY_FILE, and a rotated key still opens records of the previous one. The delivery
// spool: sealed appends, and the start-up scrub that sets an altered record aside.

import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ClassicLevel } from "classic-level";
import { describe, expect, it } from "vitest";
import { isCfnError } from "../../src/errors.js";
import { DeliverySpool } from "../../src/node/delivery/spool.js";
import type { WireMessage } from "../../src/node/delivery/wire.js";
import type { ClusterNode } from "../../src/node/node.js";
import { silentLogger } from "../../src/obs/logger.js";
import { RecordCipher } from "../../src/security/record-cipher.js";
import { scrubSpool } from "../../src/security/spool-scrub.js";
import { CLUSTER_TOKEN, call, scratchRoots, startSecureNode } from "./helpers.js";

const scratch = scratchRoots();

function writeKey(root: string, name: string, mode = 0o600): string {
  const path = join(root, name);
  writeFileSync(path, randomBytes(32), { mode });
  chmodSync(path, mode);
  return path;
}

async function mirrorValues(root: string): Promise<Map<string, string>> {
  const db = new ClassicLevel<string, string>(join(root, "data", "mirror"), { valueEncoding: "utf8" });
  await db.open();
  const values = new Map<string, string>();
  // The messages' entries (m!<agent>!<prefix>); t!token is the mirror's own random marker token.
  for await (const [key, value] of db.iterator({ gte: "m!", lt: "m!\xff" })) values.set(key, value);
  await db.close();
  return values;
}

/** Every file under the agent's dir named like a message, by subdir. */
function agentFiles(root: string, agent: string): { inbox: string[]; dead: string[] } {
  const found = { inbox: [] as string[], dead: [] as string[] };
  const walk = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (!entry.isDirectory()) continue;
      if (entry.name === agent) {
        for (const kind of ["inbox", "dead"] as const) {
          const sub = join(path, kind);
          if (existsSync(sub)) for (const name of readdirSync(sub)) found[kind].push(join(sub, name));
        }
      } else walk(path);
    }
  };
  walk(join(root, "bus"));
  return found;
}

async function expectKeyFileRefusal(start: Promise<ClusterNode>, pattern: RegExp): Promise<void> {
  try {
    const node = await start;
    await node.shutdown("test");
  } catch (error) {
    expect(isCfnError(error, "CFN_ERR_KEY_FILE")).toBe(true);
    expect((error as Error).message).toMatch(pattern);
    return;
  }
  throw new Error("the node started although its key is wrong");
}

describe("encryption at rest on a node", () => {
  it("seals mirrored messages, restores them, dead-letters an altered one, refuses a wrong key, reads a rotated one", async () => {
    const root = scratch();
    const key = writeKey(root, "key");
    const persistence = { persistence: true, persistenceFlushIntervalMs: 20 };
    let node = await startSecureNode({ root, node: persistence, security: { encryptionKeyFile: key } });
    expect((await call(node, "POST", "/v1/agents", CLUSTER_TOKEN, { agent: "vault" })).status).toBe(200);
    for (let i = 0; i < 3; i++) {
      const sent = await call(node, "POST", "/v1/send", CLUSTER_TOKEN, {
        from: "writer",
        to: "vault",
        type: "note",
        payload: { text: `secret-payload-${i}` },
      });
      expect(sent.status).toBe(200);
    }
    await node.shutdown("test"); // the mirror's last sweep runs at close

    const sealed = await mirrorValues(root);
    expect(sealed.size).toBe(3);
    for (const value of sealed.values()) {
      expect(value.startsWith("cfnenc1.")).toBe(true);
      expect(value).not.toContain("secret-payload");
    }
    // Alter one record's ciphertext on disk, then lose tmpfs (a host restart).
    const [alteredKey, alteredValue] = [...sealed.entries()][1];
    const parts = alteredValue.split(".");
    const body = Buffer.from(parts[4], "base64url");
    body[0] ^= 0x55;
    parts[4] = body.toString("base64url");
    const db = new ClassicLevel<string, string>(join(root, "data", "mirror"), { valueEncoding: "utf8" });
    await db.open();
    await db.put(alteredKey, parts.join("."));
    await db.close();
    rmSync(join(root, "bus"), { recursive: true, force: true });

    node = await startSecureNode({ root, node: persistence, security: { encryptionKeyFile: key } });
    const files = agentFiles(root, "vault");
    expect(files.inbox).toHaveLength(2);
    for (const file of files.inbox) expect(readFileSync(file, "utf8")).toMatch(/secret-payload-[02]/);
    const reasons = files.dead.filter((file) => file.endsWith(".reason"));
    expect(reasons).toHaveLength(1);
    const reason = JSON.parse(readFileSync(reasons[0], "utf8")) as { cause: string; reason: string };
    expect(reason.cause).toBe("undecryptable");
    expect(reason.reason).toMatch(/authentication failed/);
    expect((await call(node, "GET", "/healthz")).status).toBe(200); // still serving
    await node.shutdown("test");

    // The two restored records are still mirrored; without their key the node refuses to start —
    // also when the bus outlived the node (nothing to restore, the records stay).
    const otherKey = writeKey(root, "other-key");
    await expectKeyFileRefusal(
      startSecureNode({ root, node: persistence, security: { encryptionKeyFile: otherKey } }),
      /not configured/,
    );
    await expectKeyFileRefusal(startSecureNode({ root, node: persistence }), /not configured/);
    rmSync(join(root, "bus"), { recursive: true, force: true });
    await expectKeyFileRefusal(
      startSecureNode({ root, node: persistence, security: { encryptionKeyFile: otherKey } }),
      /not configured/,
    );
    await expectKeyFileRefusal(startSecureNode({ root, node: persistence }), /not configured/);

    // Rotation: a new active key, the old one listed as previous: records open, new ones use the new key.
    node = await startSecureNode({
      root,
      node: persistence,
      security: { encryptionKeyFile: otherKey, encryptionPreviousKeyFiles: [key] },
    });
    expect(agentFiles(root, "vault").inbox).toHaveLength(2);
    await call(node, "POST", "/v1/send", CLUSTER_TOKEN, {
      from: "writer",
      to: "vault",
      type: "note",
      payload: "after",
    });
    await node.shutdown("test");
    const rotatedId = RecordCipher.fromKeyFiles(otherKey).activeKeyId;
    const keyIds = [...(await mirrorValues(root)).values()].map((value) => value.split(".")[1]);
    expect(keyIds).toContain(rotatedId);
  }, 60_000);

  it("refuses a key file readable by others, or of the wrong size, before writing anything", async () => {
    const root = scratch();
    await expectKeyFileRefusal(
      startSecureNode({ root, security: { encryptionKeyFile: writeKey(root, "open-key", 0o644) } }),
      /mode 644/,
    );
    const short = join(root, "short-key");
    writeFileSync(short, randomBytes(16), { mode: 0o600 });
    await expectKeyFileRefusal(startSecureNode({ root, security: { encryptionKeyFile: short } }), /32 bytes/);
    expect(existsSync(join(root, "data", "raft"))).toBe(false);
    expect(existsSync(join(root, "data", "node.json"))).toBe(false);
  });
});

describe("encryption at rest in the delivery spool", () => {
  function message(id: string): WireMessage {
    return {
      id,
      from: "a",
      to: "b",
      type: "t",
      priority: "normal",
      headers: {},
      payload: `body-of-${id}`,
      ts: 1,
    };
  }

  it("seals appends; the start-up scrub dead-letters an altered record and renumbers the rest", async () => {
    const root = scratch();
    const path = join(root, "spool");
    const codec = new RecordCipher(randomBytes(32));
    let spool = await DeliverySpool.open({ path, sync: false, logger: silentLogger, codec });
    const stream = spool.streamId;
    // Three appends: three records (runs of one message each).
    for (const id of ["m1", "m2", "m3"]) await spool.append([{ dest: "n2", message: message(id) }]);
    await spool.close();

    const db = new ClassicLevel<string, string>(path, { valueEncoding: "utf8" });
    await db.open();
    const key2 = `o!n2!${String(2).padStart(16, "0")}`;
    for await (const [key, value] of db.iterator({ gte: "o!", lt: "o!\xff" })) {
      expect(value.startsWith("cfnenc1.")).toBe(true);
      expect(value).not.toContain("body-of");
      if (key === key2) await db.put(key, `${value.slice(0, -4)}AAAA`);
    }
    await db.close();

    expect(await scrubSpool(path, codec, silentLogger)).toBe(1);
    spool = await DeliverySpool.open({ path, sync: false, logger: silentLogger, codec });
    expect(spool.streamId).not.toBe(stream);
    const outbound = (await spool.loadOutbound()).get("n2") ?? [];
    expect(outbound.map((item) => [item.seq, item.message.id])).toEqual([
      [1, "m1"],
      [2, "m3"],
    ]);
    expect(outbound[1].message.payload).toBe("body-of-m3");
    const [next] = await spool.append([{ dest: "n2", message: message("m4") }]);
    expect(next.seq).toBe(3);
    await spool.close();

    const check = new ClassicLevel<string, string>(path, { valueEncoding: "utf8" });
    await check.open();
    const dead = JSON.parse((await check.get(`x!n2!${String(2).padStart(16, "0")}`)) as string) as {
      reason: string;
    };
    expect(dead.reason).toMatch(/authentication failed/);
    await check.close();
    // A clean spool is left as it is.
    expect(await scrubSpool(path, codec, silentLogger)).toBe(0);
  });
});
