// Docs follow the code: the metric catalog in docs/MONITORING.md is generated from the metric
// definitions in src/ (rewrite it with CFN_REWRITE=1), and every doc the README links exists.

import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "..");

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sourceFiles(path));
    else if (name.endsWith(".ts")) out.push(path);
  }
  return out.sort();
}

interface MetricDefinition {
  name: string;
  kind: string;
  help: string;
  labels: string;
  file: string;
}

/** Every `metrics.counter|gauge|histogram("cfn_…", "help", [labels])` in src/. */
function metricDefinitions(): MetricDefinition[] {
  const pattern =
    /\.(counter|gauge|histogram)\(\s*"(cfn_[a-z0-9_]+)",\s*((?:"(?:[^"\\]|\\.)*"\s*\+?\s*)+|`[^`]*`)(?:,\s*\[([^\]]*)\])?/g;
  const byName = new Map<string, MetricDefinition>();
  for (const file of sourceFiles(join(root, "src"))) {
    const text = readFileSync(file, "utf8");
    for (const match of text.matchAll(pattern)) {
      const help = match[3]
        .split(/"\s*\+\s*"/)
        .join("")
        .replace(/^[`"]|[`"]\s*$/g, "")
        .trim();
      // A multi-line label list ends in a comma (biome's trailing commas): split, drop empties.
      const labels = (match[4] ?? "")
        .split(",")
        .map((label) => label.replace(/["'\s]/g, ""))
        .filter((label) => label.length > 0)
        .join(", ");
      if (!byName.has(match[2])) {
        byName.set(match[2], {
          name: match[2],
          kind: match[1],
          help,
          labels,
          file: file.slice(root.length + 1),
        });
      }
    }
  }
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** Names written only to the JSONL stream: `metrics.emit("cfn_…", value, labels)`. */
function jsonlOnlyNames(defined: Set<string>): Array<{ name: string; file: string }> {
  const out = new Map<string, string>();
  for (const file of sourceFiles(join(root, "src"))) {
    for (const match of readFileSync(file, "utf8").matchAll(/\.emit\(\s*"(cfn_[a-z0-9_]+)"/g)) {
      if (!defined.has(match[1]) && !out.has(match[1])) out.set(match[1], file.slice(root.length + 1));
    }
  }
  return [...out].sort().map(([name, file]) => ({ name, file }));
}

function catalog(): string {
  const lines = ["| metric | type | labels | meaning | defined in |", "|---|---|---|---|---|"];
  for (const metric of metricDefinitions()) {
    const cells = [
      `\`${metric.name}\``,
      metric.kind,
      metric.labels || "—",
      metric.help,
      `\`${metric.file}\``,
    ];
    lines.push(`| ${cells.map((cell) => cell.replace(/\|/g, "\\|")).join(" | ")} |`);
  }
  const defined = new Set(metricDefinitions().map((metric) => metric.name));
  lines.push("", "Written to the JSONL stream only:", "", "| event | emitted in |", "|---|---|");
  for (const event of jsonlOnlyNames(defined)) lines.push(`| \`${event.name}\` | \`${event.file}\` |`);
  return lines.join("\n");
}

describe("docs follow the code", () => {
  it("docs/MONITORING.md lists every metric defined in src/", () => {
    const path = join(root, "docs", "MONITORING.md");
    const doc = readFileSync(path, "utf8");
    const [head, rest] = doc.split(/(?<=<!-- metrics:begin[^>]*-->\n)/);
    const tail = rest?.slice(rest.indexOf("\n<!-- metrics:end -->"));
    expect(rest, "MONITORING.md has the metrics:begin/end markers").toBeDefined();
    const generated = catalog();
    if (process.env.CFN_REWRITE === "1") writeFileSync(path, `${head}${generated}${tail}`);
    else expect(rest.slice(0, rest.indexOf("\n<!-- metrics:end -->"))).toBe(generated);
    expect(metricDefinitions().length).toBeGreaterThan(20);
  });

  it("the catalog's labels column names each label once, comma-separated, with no empty entries", () => {
    const doc = readFileSync(join(root, "docs", "MONITORING.md"), "utf8");
    const rows = [...doc.matchAll(/^\| `(cfn_[a-z0-9_]+)` \| (?:counter|gauge|histogram) \| ([^|]*) \|/gm)];
    expect(rows.length).toBeGreaterThan(20);
    for (const [, name, labels] of rows) expect(labels, name).toMatch(/^(—|[a-z_]+(, [a-z_]+)*)$/);
    const bySource = new Map(metricDefinitions().map((metric) => [metric.name, metric.labels]));
    expect(bySource.get("cfn_node_bad_frames_total")).toBe("channel, reason");
    expect(bySource.get("cfn_bus_inbox_depth")).toBe("agent");
  });

  it("every docs/ link in the README points at a file that exists", () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    const links = [...readme.matchAll(/\]\(((?:docs|examples)\/[^)#]+)\)/g)].map((match) => match[1]);
    expect(links.length).toBeGreaterThan(3);
    for (const link of links) expect(existsSync(join(root, link)), link).toBe(true);
  });
});
