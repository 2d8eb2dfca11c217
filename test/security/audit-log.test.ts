// The audit log on a real LevelDB: chained entries, verify catching a changed, removed or
// inserted entry, retention by count and by age, queries.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClassicLevel } from "classic-level";
import { afterEach, describe, expect, it } from "vitest";
import { isCfnError } from "../../src/errors.js";
import { silentLogger } from "../../src/obs/logger.js";
import { AuditLog, type AuditLogOptions, type AuditRecord, hashEntry } from "../../src/security/audit-log.js";

const dirs: string[] = [];
function scratch(): string {
  const dir = mkdtempSync(join(tmpdir(), "cfn-audit-"));
  dirs.push(dir);
  return join(dir, "audit");
}

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function record(principal: string, action: string, outcome: AuditRecord["outcome"] = "ok"): AuditRecord {
  return {
    node: "n1",
    requestId: `r-${principal}-${action}`,
    principal,
    action,
    outcome,
    status: outcome === "ok" ? 200 : 403,
    remote: "127.0.0.1",
  };
}

function open(path: string, overrides: Partial<AuditLogOptions> = {}): Promise<AuditLog> {
  return AuditLog.open({
    path,
    logger: silentLogger,
    retentionDays: 30,
    entriesMax: 1000,
    batchEntriesMax: 4,
    ...overrides,
  });
}

async function rewrite(
  path: string,
  seq: number,
  change: (entry: Record<string, unknown>) => Record<string, unknown> | undefined,
): Promise<void> {
  const db = new ClassicLevel<string, string>(path, { keyEncoding: "utf8", valueEncoding: "utf8" });
  await db.open();
  const key = `e!${String(seq).padStart(16, "0")}`;
  const changed = change(JSON.parse((await db.get(key)) ?? "{}"));
  if (changed) await db.put(key, JSON.stringify(changed));
  else await db.del(key);
  await db.close();
}

describe("audit log", () => {
  it("chains entries in append order across group-committed batches and a reopen", async () => {
    const path = scratch();
    const log = await open(path);
    const entries = await Promise.all(
      Array.from({ length: 10 }, (_, i) => log.append(record(`p${i % 3}`, `POST /v1/x${i}`))),
    );
    expect(entries.map((entry) => entry.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(entries[0].prev).toBe("0".repeat(64));
    for (let i = 1; i < entries.length; i++) expect(entries[i].prev).toBe(entries[i - 1].hash);
    const { hash, ...unhashed } = entries[4];
    expect(hashEntry(unhashed)).toBe(hash);
    await log.close();
    const reopened = await open(path);
    const next = await reopened.append(record("p9", "DELETE /v1/members/n2"));
    expect(next.seq).toBe(11);
    expect(next.prev).toBe(entries[9].hash);
    expect(await reopened.verify()).toMatchObject({
      ok: true,
      entries: 11,
      firstSeq: 1,
      headSeq: 11,
      headHash: next.hash,
    });
    await reopened.close();
  });

  it("verify finds a modified, a removed and a re-hashed entry", async () => {
    const path = scratch();
    const log = await open(path);
    for (let i = 0; i < 6; i++) await log.append(record("alice", `POST /v1/agents/${i}`));
    await log.close();

    await rewrite(path, 3, (entry) => ({ ...entry, principal: "mallory" }));
    let reopened = await open(path);
    expect(await reopened.verify()).toMatchObject({
      ok: false,
      problem: { seq: 3, reason: expect.stringMatching(/hash/) },
    });
    await reopened.close();

    // Re-hashing the changed entry moves the break to the next one (its prev no longer matches).
    await rewrite(path, 3, (entry) => {
      const { hash: _old, ...rest } = entry;
      return { ...rest, hash: hashEntry(rest as never) };
    });
    reopened = await open(path);
    expect(await reopened.verify()).toMatchObject({
      ok: false,
      problem: { seq: 4, reason: expect.stringMatching(/prev/) },
    });
    await reopened.close();

    await rewrite(path, 5, () => undefined);
    reopened = await open(path);
    const report = await reopened.verify();
    expect(report.ok).toBe(false);
    await reopened.close();
  });

  it("verify finds a field added to an entry, and covers principalKind and tokenId by the hash", async () => {
    const path = scratch();
    const log = await open(path);
    await log.append(record("alice", "POST /v1/agents/a"));
    await log.append({
      ...record("alice", "POST /v1/agents/b"),
      principalKind: "token",
      tokenId: "0123456789ab",
    });
    await log.append(record("alice", "POST /v1/agents/c"));
    expect((await log.verify()).ok).toBe(true);
    await log.close();

    // Not covered by the hash, a field added to an entry would pass unseen: it is refused.
    await rewrite(path, 1, (entry) => ({ ...entry, note: "injected" }));
    let reopened = await open(path);
    expect(await reopened.verify()).toMatchObject({
      ok: false,
      problem: { seq: 1, reason: expect.stringMatching(/field "note"/) },
    });
    await reopened.close();
    await rewrite(path, 1, ({ note: _note, ...entry }) => entry);
    await rewrite(path, 2, (entry) => ({ ...entry, principalKind: "cluster" }));
    reopened = await open(path);
    expect(await reopened.verify()).toMatchObject({
      ok: false,
      problem: { seq: 2, reason: expect.stringMatching(/hash/) },
    });
    await reopened.close();
  });

  it("keeps at most entriesMax entries and a verifiable chain after pruning", async () => {
    const path = scratch();
    const log = await open(path, { entriesMax: 100 });
    for (let i = 0; i < 130; i++) await log.append(record("bot", `POST /v1/send-${i}`));
    await log.flush();
    await log.prune();
    expect(log.size).toBe(100);
    const report = await log.verify();
    expect(report).toMatchObject({ ok: true, entries: 100, firstSeq: 31, headSeq: 130 });
    await log.close();
    const reopened = await open(path, { entriesMax: 100 });
    expect(await reopened.verify()).toMatchObject({ ok: true, firstSeq: 31 });
    await reopened.close();
  });

  it("deletes entries older than retentionDays", async () => {
    const path = scratch();
    let nowMs = Date.parse("2026-01-01T00:00:00Z");
    const log = await open(path, { retentionDays: 7, now: () => nowMs });
    await log.append(record("old", "POST /v1/a"));
    await log.append(record("old", "POST /v1/b"));
    nowMs += 10 * 86_400_000;
    await log.append(record("new", "POST /v1/c"));
    expect(await log.prune()).toBe(2);
    expect((await log.query({ limit: 10 })).map((entry) => entry.principal)).toEqual(["new"]);
    expect(await log.verify()).toMatchObject({ ok: true, entries: 1, firstSeq: 3 });
    await log.close();
  });

  it("answers queries by time, principal, action prefix and outcome, newest limited", async () => {
    const path = scratch();
    let nowMs = Date.parse("2026-01-01T00:00:00Z");
    const log = await open(path, { now: () => nowMs });
    await log.append(record("alice", "POST /v1/members"));
    nowMs += 60_000;
    await log.append(record("bob", "POST /v1/agents", "denied"));
    await log.append(record("alice", "DELETE /v1/security/tokens/abc"));
    await log.append(record("alice", "POST /v1/security/tokens"));
    const alice = await log.query({ principal: "alice", limit: 10 });
    expect(alice.map((entry) => entry.seq)).toEqual([1, 3, 4]);
    expect((await log.query({ sinceMs: nowMs - 1000, limit: 10 })).map((entry) => entry.seq)).toEqual([
      2, 3, 4,
    ]);
    expect((await log.query({ outcome: "denied", limit: 10 })).map((entry) => entry.principal)).toEqual([
      "bob",
    ]);
    expect((await log.query({ action: "POST /v1/security", limit: 10 })).map((entry) => entry.seq)).toEqual([
      4,
    ]);
    expect((await log.query({ limit: 2 })).map((entry) => entry.seq)).toEqual([3, 4]);
    await log.close();
  });

  it("refuses a second open of the same path in one process", async () => {
    const path = scratch();
    const log = await open(path);
    await expect(open(path)).rejects.toSatisfy((error) => isCfnError(error, "CFN_ERR_DATA_DIR_LOCKED"));
    await log.close();
    await expect(log.append(record("x", "y"))).rejects.toSatisfy((error) =>
      isCfnError(error, "CFN_ERR_CLOSED"),
    );
  });
});
