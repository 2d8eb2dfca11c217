// The bus when its directory fails (docs/BUS.md, "When the bus directory fails"): a full tmpfs
// (no space, no inodes), a process out of descriptors. A full disk is a real tiny tmpfs mounted
// for the test (it needs root on Linux, as .ci/run has; test/storage/tiny-tmpfs.ts); EMFILE is
// injected through the bus's FileIo seam.

import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  rmSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { FileIo } from "../../src/bus/file-io.js";
import type { Bus, Mailbox } from "../../src/bus/index.js";
import { type CfnError, isCfnError } from "../../src/errors.js";
import { fillSpace, mountTinyTmpfs } from "../storage/tiny-tmpfs.js";
import { openTestBus, REPO, tempRoot } from "./helpers.js";

const CLI = join(REPO, "dist", "src", "cli", "main.js");

const mounts: (() => void)[] = [];
const cleanups: (() => void)[] = [];
const mailboxes: Mailbox[] = [];
const buses: Bus[] = [];

afterEach(() => {
  for (const mailbox of mailboxes.splice(0)) {
    try {
      mailbox.close();
    } catch {}
  }
  for (const bus of buses.splice(0)) bus.close();
  for (const unmount of mounts.splice(0)) unmount();
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** A fresh tiny tmpfs (unmounted and removed after the test). */
function tinyTmpfs(options = "size=256k"): string {
  const dir = join(tmpdir(), `cfn-full-${process.pid}-${randomBytes(4).toString("hex")}`);
  const unmount = mountTinyTmpfs(dir, options);
  mounts.push(() => {
    unmount();
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Takes every inode left in `dir`'s file system but `spare`; returns the filler names. */
function fillInodes(dir: string, spare: number): void {
  const fillers: string[] = [];
  for (let index = 0; ; index++) {
    const path = join(dir, `inode-${index}`);
    try {
      writeFileSync(path, "");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOSPC") throw error;
      break;
    }
    fillers.push(path);
  }
  for (const path of fillers.slice(fillers.length - spare)) unlinkSync(path);
}

function bus(root: string, nativeIo = true): Bus {
  const opened = openTestBus(root, { nativeIo, rescanIntervalMs: 60_000 });
  buses.push(opened);
  return opened;
}

function mailboxOf(of: Bus, agent: string, options = {}): Mailbox {
  const mailbox = of.openMailbox(agent, { watch: false, ...options });
  mailboxes.push(mailbox);
  return mailbox;
}

function caught(action: () => unknown): unknown {
  try {
    action();
  } catch (error) {
    return error;
  }
  return undefined;
}

function expectBusIo(error: unknown, errno: string): void {
  expect(isCfnError(error, "CFN_ERR_BUS_IO"), `expected CFN_ERR_BUS_IO, got ${String(error)}`).toBe(true);
  expect((error as CfnError).details.errno).toBe(errno);
}

describe.each([
  ["native", true],
  ["node:fs", false],
])("a full bus (%s file helper)", (_, nativeIo) => {
  it("dead-letters a truncated file without its reason and delivers the good ones behind it", () => {
    const root = tinyTmpfs();
    const sender = bus(root, nativeIo);
    for (let n = 1; n <= 4; n++) sender.sendSync("lead", "a1", { type: "task", payload: n });
    const mailbox = mailboxOf(sender, "a1");
    const paths = mailbox.paths;
    const first = readdirSync(paths.inbox).sort()[0];
    truncateSync(join(paths.inbox, first), 10);
    writeFileSync(join(paths.inbox, "0zz-foreign"), ""); // an empty foreign name, delivered first
    fillSpace(root);

    const deliveries = mailbox.receiveNow(3);
    expect(deliveries.map((delivery) => delivery.message.payload)).toEqual([2, 3, 4]);
    mailbox.ack(deliveries);
    const dead = readdirSync(paths.dead).sort();
    expect(dead).toHaveLength(2); // the foreign name and the truncated file, neither with a reason
    expect(dead.some((name) => name.endsWith(".reason"))).toBe(false);
    expect(readdirSync(paths.claimed)).toEqual([]);
    expect(readdirSync(paths.tmp)).toEqual([]); // no .reason.<UNIQ> left behind
  });

  it("refuses a send with CFN_ERR_BUS_IO, having written nothing", () => {
    const root = tinyTmpfs();
    const sender = bus(root, nativeIo);
    sender.sendSync("lead", "a1", { type: "task", payload: "fits" });
    fillSpace(root);
    const paths = sender.layout.agent("a1");
    const error = caught(() => sender.sendSync("lead", "a1", { type: "task", payload: "x".repeat(8192) }));
    expectBusIo(error, "ENOSPC");
    expect(readdirSync(paths.inbox)).toHaveLength(1);
    expect(readdirSync(paths.tmp)).toEqual([]);
    const batch = caught(() => sender.sendBatchSync("lead", "a1", [{ type: "a" }, { type: "b" }]));
    expectBusIo(batch, "ENOSPC");
    expect(readdirSync(paths.inbox)).toHaveLength(1);
  });

  it("puts a partly nacked batch back whole when its remainder cannot be written", () => {
    const root = tinyTmpfs();
    const sender = bus(root, nativeIo);
    sender.sendBatchSync(
      "lead",
      "a1",
      [1, 2, 3].map((n) => ({ type: "task", payload: n })),
    );
    const mailbox = mailboxOf(sender, "a1");
    const [one, two, three] = mailbox.receiveNow(3);
    mailbox.nack(two);
    fillSpace(root);
    mailbox.ack([one, three]); // completes the claim: the remainder (message 2) needs a new file
    const paths = mailbox.paths;
    expect(readdirSync(paths.claimed)).toEqual([]);
    expect(readdirSync(paths.tmp)).toEqual([]);
    const queued = readdirSync(paths.inbox);
    expect(queued).toHaveLength(1);
    expect(queued[0]).toMatch(/_3_[^_]+_1\.json$/); // the whole batch, the nack's delivery counted
    const again = mailbox.receiveNow(3);
    expect(again.map((delivery) => delivery.message.payload)).toEqual([1, 2, 3]);
    expect(again[0].deliveries).toBe(2);
  });
});

describe("a full bus", () => {
  it("opens a mailbox whose claims need dead-lettering, and returns the rest of them", () => {
    const root = tinyTmpfs();
    const sender = bus(root);
    sender.sendSync("lead", "a1", { type: "task", payload: "expired" });
    const paths = sender.layout.agent("a1");
    const [queued] = readdirSync(paths.inbox);
    // A claim of a consumer whose deadline passed, and a foreign name in claimed/ (sorted first).
    const claimedName = queued.replace(/_0\.json$/, `_1_${Date.now() - 1000}_${process.pid}.json`);
    execFileSync("mv", [join(paths.inbox, queued), join(paths.claimed, claimedName)]);
    writeFileSync(join(paths.claimed, "0-foreign"), "");
    fillSpace(root);
    const mailbox = mailboxOf(sender, "a1");
    expect(readdirSync(paths.claimed)).toEqual([]);
    expect(readdirSync(paths.dead)).toEqual(["0-foreign"]);
    expect(mailbox.receiveNow(1).map((delivery) => delivery.message.payload)).toEqual(["expired"]);
    expect(readdirSync(paths.tmp)).toEqual([]);
    expect(existsSync(paths.heartbeat)).toBe(false); // no empty heartbeat left behind
  });

  it("refuses to open a new bus with CFN_ERR_BUS_IO and leaves no bus.conf temporary", () => {
    const root = tinyTmpfs();
    fillSpace(root);
    const error = caught(() => openTestBus(root, { name: "fresh" }));
    expectBusIo(error, "ENOSPC");
    expect(readdirSync(join(root, "fresh"))).toEqual([]);
  });

  it("makes no half agent directory when the inodes run out", () => {
    const root = tinyTmpfs("size=1m,nr_inodes=64");
    const sender = bus(root);
    const paths = sender.layout.agent("brandnew");
    mkdirSync(join(root, "test", String(paths.shard)), { recursive: true });
    fillInodes(root, 2); // room for the agent's directory and its tmp/, not its inbox/
    expectBusIo(
      caught(() => mailboxOf(sender, "brandnew")),
      "ENOSPC",
    );
    expect(existsSync(paths.dir)).toBe(false);
  });

  it("prints CFN_ERR_BUS_IO without a stack from the CLI, and in --json; recv still drains", async () => {
    const root = tinyTmpfs();
    expect(existsSync(CLI), "npm run build first").toBe(true);
    const env = { CFN_BUS_ROOT: root, CFN_BUS_NAME: "cli" };
    const sent = await runCli(["send", "a1", '"fits"'], env);
    expect(sent.code).toBe(0);
    fillSpace(root);
    const human = await runCli(["send", "a1", JSON.stringify("x".repeat(8192))], env);
    expect(human.code).toBe(1);
    expect(human.stderr).toMatch(/^cfn: CFN_ERR_BUS_IO sending to a1: ENOSPC/m);
    expect(human.stderr).not.toMatch(/^\s+at /m);
    const json = await runCli(["send", "a1", JSON.stringify("x".repeat(8192)), "--json"], env);
    const line = json.stderr.split("\n").find((text) => text.startsWith('{"error"'));
    expect(JSON.parse(line ?? "{}").error).toMatchObject({ code: "CFN_ERR_BUS_IO", errno: "ENOSPC" });
    const received = await runCli(["recv", "a1", "--max", "3"], env); // draining still works
    expect(received.code).toBe(0);
  });
});

/** Runs the built CLI with `env` added; its exit status and output. */
function runCli(args: string[], env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, ...env } },
      (error, _stdout, stderr) => {
        resolve({ code: error ? Number((error as { code?: number }).code ?? -1) : 0, stderr });
      },
    );
  });
}

/** The bus's FileIo with its claims failing after the rename, as an open out of descriptors does. */
function descriptorsExhaustedAfter(io: FileIo, claimsOk: number): FileIo {
  let claims = 0;
  const emfile = (path: string) =>
    Object.assign(new Error(`EMFILE: too many open files, open '${path}'`), {
      code: "EMFILE",
      errno: -24,
      syscall: "open",
      path,
    });
  return {
    ...io,
    renameAndRead(fromPath, toPath, buffer) {
      if (claims++ < claimsOk) return io.renameAndRead(fromPath, toPath, buffer);
      const length = io.renameAndRead(fromPath, toPath, buffer);
      if (length === -1) return length;
      throw emfile(toPath);
    },
    renameAndReadAt(fromDir, fromName, toDir, toName, buffer) {
      if (claims++ < claimsOk) return io.renameAndReadAt(fromDir, fromName, toDir, toName, buffer);
      const length = io.renameAndReadAt(fromDir, fromName, toDir, toName, buffer);
      if (length === -1) return length;
      throw emfile(toName);
    },
  };
}

describe.each([
  ["native", true],
  ["node:fs", false],
])("a receiver out of descriptors (%s file helper)", (_, nativeIo) => {
  function busWithFailingClaims(claimsOk: number): Bus {
    const { root, cleanup } = tempRoot();
    cleanups.push(cleanup);
    const opened = bus(root, nativeIo);
    (opened as { io: FileIo }).io = descriptorsExhaustedAfter(opened.io, claimsOk);
    return opened;
  }

  it("puts the claimed file back uncounted and throws CFN_ERR_BUS_IO", async () => {
    const faulty = busWithFailingClaims(0);
    faulty.sendSync("lead", "a1", { type: "task", payload: 1 });
    const mailbox = mailboxOf(faulty, "a1");
    const paths = mailbox.paths;
    const [queued] = readdirSync(paths.inbox);
    const error = await mailbox.receive({ timeoutMs: 0 }).catch((thrown: unknown) => thrown);
    expectBusIo(error, "EMFILE");
    expect(readdirSync(paths.claimed)).toEqual([]);
    expect(readdirSync(paths.inbox)).toEqual([queued]); // its name: no delivery counted
  });

  it("hands out what it claimed before the failure; nothing is stranded in claimed/", () => {
    const faulty = busWithFailingClaims(1);
    for (let n = 1; n <= 3; n++) faulty.sendSync("lead", "a1", { type: "task", payload: n });
    const mailbox = mailboxOf(faulty, "a1");
    const deliveries = mailbox.receiveNow(3);
    expect(deliveries.map((delivery) => delivery.message.payload)).toEqual([1]);
    const paths = mailbox.paths;
    expect(readdirSync(paths.claimed)).toHaveLength(1); // the one handed out, held until its ack
    expect(readdirSync(paths.inbox).every((name) => name.endsWith("_0.json"))).toBe(true);
    expect(readdirSync(paths.inbox)).toHaveLength(2);
    mailbox.ack(deliveries);
    expect(readdirSync(paths.claimed)).toEqual([]);
  });
});

describe("files that cannot be moved", () => {
  function busInTemp(): Bus {
    const { root, cleanup } = tempRoot();
    cleanups.push(cleanup);
    return bus(root);
  }

  it("a file that cannot be dead-lettered is skipped; the good ones are delivered", () => {
    const sender = busInTemp();
    for (let n = 1; n <= 2; n++) sender.sendSync("lead", "a1", { type: "task", payload: n });
    const mailbox = mailboxOf(sender, "a1");
    const paths = mailbox.paths;
    writeFileSync(join(paths.inbox, "0zz-foreign"), "");
    rmSync(paths.dead, { recursive: true });
    writeFileSync(paths.dead, ""); // dead/ is no directory: every move into it fails (ENOTDIR)
    const deliveries = mailbox.receiveNow(3);
    expect(deliveries.map((delivery) => delivery.message.payload)).toEqual([1, 2]);
    expect(readdirSync(paths.inbox)).toEqual(["0zz-foreign"]); // left in place, tried again later
    expect(readdirSync(paths.tmp)).toEqual([]);
  });

  it("recovery returns every claim it can when one of them cannot be moved", () => {
    const sender = busInTemp();
    for (let n = 1; n <= 2; n++) sender.sendSync("lead", "a1", { type: "task", payload: n });
    const paths = sender.layout.agent("a1");
    const queued = readdirSync(paths.inbox).sort();
    const expired = `_1_${Date.now() - 1000}_${process.pid}.json`;
    for (const name of queued)
      execFileSync("mv", [join(paths.inbox, name), join(paths.claimed, name.replace(/_0\.json$/, expired))]);
    // The first claim's way back is blocked: its queued name is taken by a directory (EISDIR).
    const blocked = queued[0].replace(/_0\.json$/, "_1.json");
    mkdirSync(join(paths.inbox, blocked, "x"), { recursive: true });
    const mailbox = mailboxOf(sender, "a1");
    expect(readdirSync(paths.claimed)).toHaveLength(1); // the blocked one, tried again next sweep
    expect(readdirSync(paths.inbox).sort()).toEqual([blocked, queued[1].replace(/_0\.json$/, "_1.json")]);
    expect(mailbox.receiveNow(2).map((delivery) => delivery.message.payload)).toEqual([2]);
  });
});

describe("heartbeatOnOpen", () => {
  it("false: opening a mailbox leaves the heartbeat alone", () => {
    const { root, cleanup } = tempRoot();
    cleanups.push(cleanup);
    const opened = bus(root);
    const reader = mailboxOf(opened, "a1", { heartbeat: false, heartbeatOnOpen: false });
    expect(existsSync(reader.paths.heartbeat)).toBe(false);
    const server = mailboxOf(opened, "a2", { heartbeat: false });
    expect(statSync(server.paths.heartbeat).size).toBeGreaterThan(0);
  });
});
