// The inbox watch (src/bus/inbox-watch.ts): fs.watch events only as hints of what arrived. Events
// of files this mailbox claimed — the departure, and the arrival when its event comes in after a
// listing had found the file and it was claimed — must not be reported as arrivals.

import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { InboxWatch } from "../../src/bus/inbox-watch.js";
import { silentLogger } from "../../src/obs/logger.js";
import { tempRoot } from "./helpers.js";

let root: string;
let cleanup: () => void;
let inbox: string;
let claimed: string;

beforeEach(() => {
  ({ root, cleanup } = tempRoot());
  inbox = join(root, "inbox");
  claimed = join(root, "claimed");
  mkdirSync(inbox);
  mkdirSync(claimed);
});
afterEach(() => cleanup());

/** Moves a new file into the inbox as a sender does. */
function arrive(name: string): void {
  writeFileSync(join(root, name), "x");
  renameSync(join(root, name), join(inbox, name));
}

/** Lets the watch read every event queued so far. */
async function settle(watch: InboxWatch): Promise<void> {
  for (let round = 0; round < 5; round++) await watch.wait(20);
}

describe("InboxWatch", () => {
  it("reports a file that arrives", async () => {
    const watch = new InboxWatch(inbox, silentLogger, true);
    watch.listed();
    arrive("a.json");
    await settle(watch);
    expect(watch.arrivals).toEqual(["a.json"]);
    expect(watch.complete).toBe(true);
    watch.stop();
  });

  it("reports neither event of a file claimed before its arrival event was read", async () => {
    const watch = new InboxWatch(inbox, silentLogger, true);
    watch.listed();
    // Arrival and claim within one turn of the event loop: a listing found the file first.
    arrive("b.json");
    watch.claimed("b.json");
    renameSync(join(inbox, "b.json"), join(claimed, "b.json"));
    await settle(watch);
    expect(watch.arrivals).toEqual([]);
    // The claim's two events were both matched: a later file is reported again.
    arrive("c.json");
    await settle(watch);
    expect(watch.arrivals).toEqual(["c.json"]);
    watch.stop();
  });

  it("drops the one event left of a file claimed after its arrival event was read", async () => {
    const watch = new InboxWatch(inbox, silentLogger, true);
    watch.listed();
    arrive("d.json");
    await settle(watch);
    expect(watch.arrivals).toEqual(["d.json"]);
    watch.arrivals = []; // taken, as claimArrivals does
    watch.claimed("d.json");
    renameSync(join(inbox, "d.json"), join(claimed, "d.json"));
    await settle(watch);
    expect(watch.arrivals).toEqual([]);
    // Only one event was expected for it: the name of the next file is not swallowed.
    arrive("e.json");
    await settle(watch);
    expect(watch.arrivals).toEqual(["e.json"]);
    watch.stop();
  });
  it("notices that its directory was removed and created again, and watches the new one", async () => {
    const watch = new InboxWatch(inbox, silentLogger, true);
    watch.listed();
    expect(watch.replaced()).toBe(false);
    rmSync(inbox, { recursive: true });
    expect(watch.replaced()).toBe(true); // gone
    mkdirSync(inbox);
    expect(watch.replaced()).toBe(true); // another directory under the same path
    watch.restart();
    expect(watch.replaced()).toBe(false);
    watch.listed();
    arrive("d.json");
    await settle(watch);
    expect(watch.arrivals).toEqual(["d.json"]);
    watch.stop();
  });
});
