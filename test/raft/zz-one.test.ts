import { it } from "vitest";
import { configForSeed } from "../../chaos/sim/config.js";
import { runSimulation } from "../../chaos/sim/simulation.js";

it("one", () => {
  const seed = Number(process.env.SEED);
  const lines: string[] = [];
  const t0 = performance.now();
  const r = runSimulation(
    { ...configForSeed(seed), ...(process.env.FAULT ? { shellFault: process.env.FAULT as never } : {}) },
    { fullTrace: true, onTrace: (l) => lines.push(l) },
  );
  console.log(r.ok, performance.now() - t0, JSON.stringify(r.stats));
  console.log(r.report?.split("last events:")[0]);
  const grep = process.env.GREP ? new RegExp(process.env.GREP) : undefined;
  const out = lines.filter((l) => !grep || grep.test(l));
  console.log(out.slice(-Number(process.env.TAIL ?? 100)).join("\n"));
}, 600_000);
