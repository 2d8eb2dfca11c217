// The bus's file steps (src/bus/file-io.ts): the compiled Node-API helper and the node:fs
// implementation must behave alike — same files, same modes, same errors — and a bus using one
// must interoperate with a bus using the other.

import { spawnSync } from "node:child_process";
import { closeSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  type FileIo,
  loadNativeFileIo,
  nativeError,
  nativeFileIoProblem,
  nodeFileIo,
} from "../../src/bus/file-io.js";
import { nodeHeadersDir } from "../../src/native/bus-io-build.js";
import { cCompilers } from "../../src/native/c-build.js";
import { openTestBus, tempRoot } from "./helpers.js";

let root: string;
let cleanup: () => void;

beforeEach(() => {
  ({ root, cleanup } = tempRoot());
  mkdirSync(join(root, "tmp"));
  mkdirSync(join(root, "inbox"));
  mkdirSync(join(root, "claimed"));
});
afterEach(() => cleanup());

const compilerPresent = cCompilers().some((cc) => spawnSync(cc, ["--version"]).status === 0);
const native = loadNativeFileIo();

describe("the compiled helper", () => {
  it("is built by npm run build and loads wherever a C compiler and Node's headers exist", () => {
    if (compilerPresent && nodeHeadersDir()) {
      expect(nativeFileIoProblem()).toBeUndefined();
      expect(native?.native).toBe(true);
    } else {
      // Without them the bus must still work: it falls back to node:fs and says why.
      expect(native).toBeUndefined();
      expect(nativeFileIoProblem()).toBeTruthy();
      expect(openTestBus(root).io.native).toBe(false);
    }
  });

  it("turns its failure codes into node:fs-shaped errors", () => {
    const error = nativeError(-(3 * 65536 + 2), "/a", "/b");
    expect(error).toMatchObject({ code: "ENOENT", errno: -2, syscall: "rename", path: "/a", dest: "/b" });
    expect(error.message).toBe("ENOENT: no such file or directory, rename '/a' -> '/b'");
    expect(nativeError(-(1 * 65536 + 13), "/x")).toMatchObject({ code: "EACCES", syscall: "open" });
  });
});

const implementations: [string, FileIo][] = [["node:fs", nodeFileIo]];
if (native) implementations.push(["native", native]);

describe.each(implementations)("FileIo (%s)", (_name, io) => {
  it("writes a file with the given mode and renames it into place, leaving no temporary file", () => {
    const text = '{"v":1,"payload":"héllo ✓"}\n';
    io.writeAndRename(join(root, "tmp", "m1"), join(root, "inbox", "m1"), text, 0o600);
    expect(readFileSync(join(root, "inbox", "m1"), "utf8")).toBe(text);
    expect(statSync(join(root, "inbox", "m1")).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(root, "tmp"))).toEqual([]);
  });

  it("writes a text larger than any buffer it keeps", () => {
    const text = "x".repeat(5 * 1024 * 1024 + 3);
    io.writeAndRename(join(root, "tmp", "big"), join(root, "inbox", "big"), text, 0o600);
    expect(statSync(join(root, "inbox", "big")).size).toBe(text.length);
  });

  it("fails like node:fs when a directory is missing, and removes its temporary file", () => {
    expect(() => io.writeAndRename(join(root, "gone", "m"), join(root, "inbox", "m"), "x", 0o600)).toThrow(
      expect.objectContaining({ code: "ENOENT", syscall: "open" }),
    );
    expect(() => io.writeAndRename(join(root, "tmp", "m"), join(root, "gone", "m"), "x", 0o600)).toThrow(
      expect.objectContaining({ code: "ENOENT", syscall: "rename" }),
    );
    expect(readdirSync(join(root, "tmp"))).toEqual([]);
  });

  it("claims by rename and reads the whole file, or reports a lost race with -1", () => {
    writeFileSync(join(root, "inbox", "a"), "hello");
    const buffer = Buffer.alloc(64);
    expect(io.renameAndRead(join(root, "inbox", "a"), join(root, "claimed", "a"), buffer)).toBe(5);
    expect(buffer.toString("utf8", 0, 5)).toBe("hello");
    expect(readdirSync(join(root, "inbox"))).toEqual([]);
    expect(io.renameAndRead(join(root, "inbox", "a"), join(root, "claimed", "b"), buffer)).toBe(-1);
  });

  it("stops at a full buffer so the caller can read a larger file another way", () => {
    writeFileSync(join(root, "inbox", "long"), "0123456789");
    const buffer = Buffer.alloc(4);
    expect(io.renameAndRead(join(root, "inbox", "long"), join(root, "claimed", "long"), buffer)).toBe(4);
    expect(buffer.toString()).toBe("0123");
  });

  it("opens a spare that never replaces a file, then writes it and renames it into place", () => {
    const spare = join(root, "tmp", "spare");
    const fd = io.openSpare(spare, 0o600);
    expect(readdirSync(join(root, "tmp"))).toEqual(["spare"]);
    expect(() => io.openSpare(spare, 0o600)).toThrow(
      expect.objectContaining({ code: "EEXIST", syscall: "open" }),
    );
    io.writeFdAndRename(fd, spare, join(root, "inbox", "s1"), "spare ✓");
    expect(readFileSync(join(root, "inbox", "s1"), "utf8")).toBe("spare ✓");
    expect(statSync(join(root, "inbox", "s1")).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(root, "tmp"))).toEqual([]);
  });

  it("removes the spare when its rename fails", () => {
    const spare = join(root, "tmp", "spare");
    const fd = io.openSpare(spare, 0o600);
    expect(() => io.writeFdAndRename(fd, spare, join(root, "gone", "s"), "x")).toThrow(
      expect.objectContaining({ code: "ENOENT", syscall: "rename" }),
    );
    expect(readdirSync(join(root, "tmp"))).toEqual([]);
  });

  it("unlinks, and reports a missing file as ENOENT", () => {
    writeFileSync(join(root, "claimed", "c"), "x");
    io.unlink(join(root, "claimed", "c"));
    expect(readdirSync(join(root, "claimed"))).toEqual([]);
    expect(() => io.unlink(join(root, "claimed", "c"))).toThrow(
      expect.objectContaining({ code: "ENOENT", syscall: "unlink" }),
    );
  });
});

describe("the helper's calls relative to directory descriptors", () => {
  /** The helper, or undefined with the reason printed (its presence is asserted above). */
  function helper(): FileIo | undefined {
    if (!native) console.log(`helper not built (${nativeFileIoProblem()}): *At calls not checked`);
    return native;
  }

  /** Runs `body` with descriptors of root's inbox/ and claimed/, closed afterwards. */
  function withDirs(io: FileIo, body: (inbox: number, claimed: number) => void): void {
    const inbox = io.openDirectory(join(root, "inbox"));
    const claimed = io.openDirectory(join(root, "claimed"));
    try {
      body(inbox, claimed);
    } finally {
      closeSync(inbox);
      closeSync(claimed);
    }
  }

  it("claims, reads and unlinks by name in descriptors of the inbox and claims directories", () => {
    const io = helper();
    if (!io) return;
    writeFileSync(join(root, "inbox", "a"), "hello");
    withDirs(io, (inbox, claimed) => {
      const buffer = Buffer.alloc(64);
      expect(io.renameAndReadAt(inbox, "a", claimed, "a.1", buffer)).toBe(5);
      expect(buffer.toString("utf8", 0, 5)).toBe("hello");
      expect(readdirSync(join(root, "claimed"))).toEqual(["a.1"]);
      // A lost race is -1, like renameAndRead.
      expect(io.renameAndReadAt(inbox, "a", claimed, "a.2", buffer)).toBe(-1);
      io.unlinkAt(claimed, "a.1");
      expect(readdirSync(join(root, "claimed"))).toEqual([]);
      expect(() => io.unlinkAt(claimed, "a.1")).toThrow(
        expect.objectContaining({ code: "ENOENT", syscall: "unlink" }),
      );
    });
  });

  it("refuses names that would reach outside the directory", () => {
    const io = helper();
    if (!io) return;
    writeFileSync(join(root, "outside"), "x");
    withDirs(io, (inbox, claimed) => {
      const buffer = Buffer.alloc(8);
      for (const name of ["../outside", "..", ".", "", "a/b"]) {
        expect(() => io.renameAndReadAt(inbox, name, claimed, "x", buffer)).toThrow(
          expect.objectContaining({ code: "EINVAL", syscall: "argument" }),
        );
        expect(() => io.unlinkAt(claimed, name)).toThrow(expect.objectContaining({ code: "EINVAL" }));
      }
      expect(readFileSync(join(root, "outside"), "utf8")).toBe("x");
    });
  });

  it("fails like node:fs on a missing directory", () => {
    const io = helper();
    if (!io) return;
    expect(() => io.openDirectory(join(root, "nowhere"))).toThrow(
      expect.objectContaining({ code: "ENOENT", syscall: "open" }),
    );
    writeFileSync(join(root, "file"), "x");
    expect(() => io.openDirectory(join(root, "file"))).toThrow(expect.objectContaining({ code: "ENOTDIR" }));
  });

  it("finds nothing in a directory removed under its descriptor (the mailbox then opens the new one)", () => {
    const io = helper();
    if (!io) return;
    withDirs(io, (inbox, claimed) => {
      rmSync(join(root, "inbox"), { recursive: true });
      mkdirSync(join(root, "inbox"));
      writeFileSync(join(root, "inbox", "a"), "hello");
      expect(io.renameAndReadAt(inbox, "a", claimed, "a.1", Buffer.alloc(8))).toBe(-1);
      expect(readdirSync(join(root, "inbox"))).toEqual(["a"]);
    });
  });

  it("is not offered by node:fs, whose mailboxes use paths", () => {
    expect(nodeFileIo.openDirectory(join(root, "inbox"))).toBe(-1);
  });
});

describe.each(implementations)("a bus's spare file (%s)", (name) => {
  const nativeIo = name === "native";
  const spares = (bus: { dir: string }) => {
    try {
      return readdirSync(join(bus.dir, "tmp"));
    } catch {
      return [];
    }
  };

  it("is opened after a send, taken by the next one, and removed when the bus closes", () => {
    const bus = openTestBus(root, { nativeIo });
    const mailbox = bus.openMailbox("receiver", { watch: false, heartbeat: false });
    expect(spares(bus)).toEqual([]);
    bus.sendSync("sender", "receiver", { type: "one" });
    const [first] = spares(bus);
    expect(first).toMatch(new RegExp(`^spare_${process.pid}_`));
    bus.sendSync("sender", "receiver", { type: "two" });
    bus.sendBatchSync("sender", "receiver", [{ type: "three" }, { type: "four" }]);
    const [third] = spares(bus);
    expect(third).toBeDefined();
    expect(third).not.toBe(first);
    const got = mailbox.receiveNow(10);
    expect(got.map((d) => d.message.type)).toEqual(["one", "two", "three", "four"]);
    mailbox.ack(got);
    bus.close();
    expect(spares(bus)).toEqual([]);
    mailbox.close();
  });

  it("falls back to the receiver's tmp/ when the spare was removed under it", () => {
    const bus = openTestBus(root, { nativeIo });
    const mailbox = bus.openMailbox("receiver", { watch: false, heartbeat: false });
    bus.sendSync("sender", "receiver", { type: "one" });
    for (const spare of spares(bus)) rmSync(join(bus.dir, "tmp", spare));
    rmSync(join(bus.dir, "tmp"), { recursive: true });
    bus.sendSync("sender", "receiver", { type: "two" });
    // ... and opens the next spare again, recreating the directory.
    expect(spares(bus)).toHaveLength(1);
    bus.sendSync("sender", "receiver", { type: "three" });
    expect(mailbox.receiveNow(10).map((d) => d.message.type)).toEqual(["one", "two", "three"]);
    bus.close();
    mailbox.close();
  });

  it("left by a process that died is removed by the next bus to open", () => {
    const bus = openTestBus(root, { nativeIo });
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]);
    const deadPid = Number(dead.stdout.toString());
    mkdirSync(join(bus.dir, "tmp"), { recursive: true });
    writeFileSync(join(bus.dir, "tmp", `spare_${deadPid}_h-1-ab-1`), "");
    writeFileSync(join(bus.dir, "tmp", `spare_${process.pid}_h-1-ab-2`), "");
    const next = openTestBus(root, { nativeIo });
    expect(spares(next)).toEqual([`spare_${process.pid}_h-1-ab-2`]);
    bus.close();
    next.close();
  });
});

describe("buses on either implementation", () => {
  it("exchange messages both ways, batches and an oversized file included", async () => {
    const viaNode = openTestBus(root, { nativeIo: false });
    const viaNative = openTestBus(root, { nativeIo: true, messageBytesMax: 4096 });
    expect(viaNode.io.native).toBe(false);
    expect(viaNative.io.native).toBe(native !== undefined);
    const a = viaNode.openMailbox("agent-a", { watch: false, heartbeat: false });
    const b = viaNative.openMailbox("agent-b", { watch: false, heartbeat: false });

    viaNode.sendSync("agent-a", "agent-b", { type: "hello", payload: { n: 1, text: "ü" } });
    viaNode.sendBatchSync("agent-a", "agent-b", [
      { type: "batch", payload: "x".repeat(3000) },
      { type: "batch", payload: "y".repeat(3000) },
    ]);
    const got = b.receiveNow(10);
    expect(got.map((d) => d.message.payload)).toEqual([
      { n: 1, text: "ü" },
      "x".repeat(3000),
      "y".repeat(3000),
    ]);
    b.ack(got);

    viaNative.sendSync("agent-b", "agent-a", { type: "reply", payload: { ok: true } });
    const back = a.receiveNow(1);
    expect(back[0].message).toMatchObject({ from: "agent-b", type: "reply", payload: { ok: true } });
    a.ack(back);

    // A file over agent-b's messageBytesMax goes to dead-letter, read no further than the limit.
    viaNode.sendSync("agent-a", "agent-b", { type: "big", payload: "z".repeat(8000) });
    expect(b.receiveNow(1)).toEqual([]);
    expect(viaNative.agentStatus("agent-b")).toMatchObject({ inboxDepth: 0, claimed: 0, deadLetters: 1 });
    a.close();
    b.close();
  });
});
