// Payloads cross nodes exactly (src/node/delivery/exact-payload.ts): msgpackr, the frames' encoding,
// turns a "__proto__" key into "__proto_" and a lone surrogate into U+FFFD; such payloads travel as
// their JSON text. Through the real frame codec, and between two real node processes.

import { afterEach, describe, expect, it } from "vitest";
import { ExactJson, exactPayload } from "../../src/node/delivery/exact-payload.js";
import { decodeFrame, encodeFrame } from "../../src/transport/frame.js";
import { api, drainInbox, TestCluster, tryStatus, waitFor } from "./harness.js";

const HAZARDS = [
  '{"__proto__":{"x":1},"s":"ok"}',
  '{"s":"\\ud800 alone"}',
  '["\\udfff", {"deep": [{"__proto__": null}]}]',
  '{"\\ud83d": "a lone high surrogate as a key"}',
  '"\\udc00"',
];
const PLAIN = ['{"a":1,"b":[true,null,"x"]}', '"a string with an emoji 😀"', "42", "null"];

function throughFrames(payload: unknown): unknown {
  const decoded = decodeFrame(encodeFrame("deliver", { m: [{ payload: exactPayload(payload) }] }));
  return (decoded.payload as { m: { payload: unknown }[] }).m[0].payload;
}

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

describe("payloads between nodes", () => {
  it("come out of the frame codec as the same JSON, hazards carried as JSON text and plain ones as they are", () => {
    for (const text of [...HAZARDS, ...PLAIN]) {
      const payload = JSON.parse(text);
      const carried = exactPayload(payload);
      expect(carried instanceof ExactJson, text).toBe(HAZARDS.includes(text));
      expect(JSON.stringify(throughFrames(payload)), text).toBe(JSON.stringify(payload));
    }
  });

  it("refuses an ExactJson extension from a peer whose text is not JSON", () => {
    const bytes = encodeFrame("deliver", { m: [{ payload: new ExactJson("{not json") }] });
    expect(() => decodeFrame(bytes)).toThrow();
  });

  it("land in the owner's inbox exactly as sent, across two node processes", async () => {
    cluster = await TestCluster.create(2);
    const [n1, n2] = cluster.nodes;
    await Promise.all(cluster.nodes.map((node) => node.start(cluster?.peerFlags(node) ?? [])));
    await cluster.waitReady(cluster.nodes);
    const registered = await api(n2.api, "POST", "/v1/agents", { agent: "exact", team: null });
    expect(registered.status, JSON.stringify(registered.json)).toBe(200);
    await waitFor("exact routed on n1", async () =>
      ((await tryStatus(n1))?.agents ?? []).some((agent: { id: string }) => agent.id === "exact"),
    );
    const bus = n1.bus();
    const all = [...HAZARDS, ...PLAIN];
    all.forEach((text, i) => {
      bus.sendSync("s1", "exact", { id: `m${i}`, type: "t", payload: JSON.parse(text) });
    });
    bus.close();
    const got: { id: string; payload: unknown }[] = [];
    await waitFor("all delivered on n2", async () => {
      got.push(...(await drainInbox(n2, "exact")));
      return got.length >= all.length;
    });
    expect(got.map((message) => message.id)).toEqual(all.map((_, i) => `m${i}`));
    got.forEach((message, i) => {
      expect(JSON.stringify(message.payload), all[i]).toBe(JSON.stringify(JSON.parse(all[i])));
    });
  }, 60_000);
});
