import { it } from "vitest";
import { configForSeed } from "../../chaos/sim/config.js";
import { runSimulation } from "../../chaos/sim/simulation.js";
it("probe", () => {
  const from = Number(process.env.FROM ?? 1), n = Number(process.env.N ?? 20);
  const t0 = performance.now();
  let fails = 0;
  for (let seed = from; seed < from + n; seed++) {
    const r = runSimulation(configForSeed(seed));
    if (!r.ok) { fails++; if (fails <= 3) console.log(r.report?.slice(0, 4000)); }
    if (seed < from + 3) console.log(seed, r.ok, r.virtualMs, r.convergedAfterHealMs, JSON.stringify(r.stats));
  }
  console.log("seeds", n, "fails", fails, "ms", performance.now() - t0);
});
