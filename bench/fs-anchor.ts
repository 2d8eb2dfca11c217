// The machine's own floor for the bus figures, measured in the same run: the fewest Node calls that
// do what the bus does, without the bus (no envelope, names, metrics, recovery, admission). Reported
// as context next to the bus's figures, like etcd beside Raft and nats-server beside cross-node.
//
//   throughput: sender open/write/close/rename of a 1 KiB file per message; receiver readdir + sort,
//               then per file rename (claim), open/read/close, unlink. One process each.
//   wake-up:    sender write + rename every gapMs; receiver fs.watch → read the named file. The
//               time from before the sender's write to the receiver's callback.

import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  unlinkSync,
  watch,
  writeSync,
} from "node:fs";
import { fileURLToPath } from "node:url";
import { forkWorker, serveWorker } from "./lib.js";

const SELF = fileURLToPath(import.meta.url);
const WORKER_FLAG = "--fs-anchor-worker";
const PAYLOAD = Buffer.alloc(1024 + 160, 120); // 1 KiB payload plus an envelope's worth of bytes
/** Longest a worker waits for its peer, ms. */
const ANCHOR_WAIT_MS_MAX = 60_000;

type Request =
  | { kind: "receive"; dir: string; count: number }
  | { kind: "send"; dir: string; count: number }
  | { kind: "watch-receive"; dir: string; samples: number }
  | { kind: "watch-send"; dir: string; samples: number; gapMs: number };

const nowNs = () => process.hrtime.bigint();

async function worker(request: Request): Promise<unknown> {
  const inbox = `${request.dir}/inbox`;
  const tmp = `${request.dir}/tmp`;
  switch (request.kind) {
    case "send": {
      const startNs = nowNs();
      for (let index = 0; index < request.count; index++) {
        const name = `m${String(index).padStart(8, "0")}`;
        const fd = openSync(`${tmp}/${name}`, "w");
        writeSync(fd, PAYLOAD);
        closeSync(fd);
        renameSync(`${tmp}/${name}`, `${inbox}/${name}`);
      }
      return { startNs: String(startNs) };
    }
    case "receive": {
      const buffer = Buffer.allocUnsafe(1 << 20);
      const claimed = `${request.dir}/claimed`;
      process.send?.({ ready: true });
      const cpuStart = process.cpuUsage();
      const deadline = Date.now() + ANCHOR_WAIT_MS_MAX;
      let received = 0;
      while (received < request.count && Date.now() < deadline) {
        const names = readdirSync(inbox).sort();
        for (const name of names) {
          const path = `${claimed}/${name}.c`;
          renameSync(`${inbox}/${name}`, path);
          const fd = openSync(path, "r");
          readSync(fd, buffer, 0, buffer.length, 0);
          closeSync(fd);
          unlinkSync(path);
          received++;
        }
        if (names.length === 0) await new Promise((resolve) => setImmediate(resolve));
      }
      const cpu = process.cpuUsage(cpuStart);
      return { received, doneNs: String(nowNs()), cpuUs: cpu.user + cpu.system };
    }
    case "watch-receive": {
      const micros: number[] = [];
      return new Promise((resolve) => {
        const timer = setTimeout(finish, ANCHOR_WAIT_MS_MAX);
        const watcher = watch(inbox, (_event, name) => {
          const wokeNs = nowNs();
          if (typeof name !== "string") return;
          try {
            const fd = openSync(`${inbox}/${name}`, "r");
            const buffer = Buffer.allocUnsafe(64);
            const length = readSync(fd, buffer, 0, 64, 0);
            closeSync(fd);
            unlinkSync(`${inbox}/${name}`);
            micros.push(Number(wokeNs - BigInt(buffer.toString("utf8", 0, length))) / 1000);
          } catch {
            return; // the unlink's own event
          }
          if (micros.length >= request.samples) finish();
        });
        function finish(): void {
          clearTimeout(timer);
          watcher.close();
          resolve({ micros });
        }
        process.send?.({ ready: true });
      });
    }
    case "watch-send": {
      for (let index = 0; index < request.samples; index++) {
        await new Promise((resolve) => setTimeout(resolve, request.gapMs));
        const name = `w${index}`;
        const fd = openSync(`${tmp}/${name}`, "w");
        writeSync(fd, String(nowNs()));
        closeSync(fd);
        renameSync(`${tmp}/${name}`, `${inbox}/${name}`);
      }
      return {};
    }
  }
}

if (process.argv.includes(WORKER_FLAG)) serveWorker(worker);

// biome-ignore lint/suspicious/noExplicitAny: each worker kind answers with its own shape
const start = (request: Request) => forkWorker<any>(SELF, WORKER_FLAG, request);

function scratch(root: string): string {
  const dir = `${root}/fs-anchor-${process.pid}-${Date.now()}`;
  for (const sub of ["inbox", "tmp", "claimed"]) mkdirSync(`${dir}/${sub}`, { recursive: true, mode: 0o700 });
  return dir;
}

/** Messages per second of the bare file pipeline, and the receiver's CPU per message (µs). */
export async function fsThroughputFloor(
  root: string,
  count: number,
): Promise<{ rate: number; receiverCpuUsPerMessage: number }> {
  const dir = scratch(root);
  try {
    const receiver = start({ kind: "receive", dir, count });
    await receiver.ready;
    const sender = start({ kind: "send", dir, count });
    const [sent, received] = await Promise.all([sender.result, receiver.result]);
    if (received.received !== count) throw new Error(`fs anchor received ${received.received} of ${count}`);
    const seconds = Number(BigInt(received.doneNs) - BigInt(sent.startNs)) / 1e9;
    return { rate: count / seconds, receiverCpuUsPerMessage: received.cpuUs / count };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Wake-up times (µs) of a bare fs.watch receiver, light load. */
export async function fsWakeupFloor(root: string, samples: number, gapMs: number): Promise<number[]> {
  const dir = scratch(root);
  try {
    const receiver = start({ kind: "watch-receive", dir, samples });
    await receiver.ready;
    const sender = start({ kind: "watch-send", dir, samples, gapMs });
    const [result] = await Promise.all([receiver.result, sender.result]);
    return (result.micros as number[]).slice(20);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
