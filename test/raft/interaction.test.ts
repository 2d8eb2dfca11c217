// Replays the scenario scripts in test/raft/testdata/*.txt and compares each command's output
// with the expected text below it. CFN_REWRITE=1 rewrites the files with the actual output;
// review the diff — the files are specifications.
//
// Format: a command line (`name arg... key=value...`), a line `----`, the expected output, and
// a blank line. Lines starting with `#` between blocks are comments.

import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { InteractionEnv } from "./interaction/env.js";

const dir = join(import.meta.dirname, "testdata");

interface Block {
  leading: string[]; // comments and blank lines before the command
  command: string;
  expected: string;
}

function parse(text: string): { blocks: Block[]; trailing: string[] } {
  const lines = text.split("\n");
  const blocks: Block[] = [];
  let leading: string[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.startsWith("#") || line.trim() === "") {
      leading.push(line);
      i++;
      continue;
    }
    const command = line;
    if (lines[i + 1] !== "----") throw new Error(`line ${i + 2}: expected ---- after command '${command}'`);
    i += 2;
    const out: string[] = [];
    while (i < lines.length && lines[i].trim() !== "") out.push(lines[i++]);
    if (i < lines.length) i++; // the blank line that ends the block
    blocks.push({ leading, command, expected: out.join("\n") });
    leading = [];
  }
  return { blocks, trailing: leading };
}

function splitCommand(command: string): { name: string; positional: string[]; args: Record<string, string> } {
  // Tokens; parenthesized lists such as voters=(1,2,3) or voters=(1 2 3) stay one token.
  const tokens = command.match(/[^\s=]+=\([^)]*\)|\S+/g) ?? [];
  const [name, ...rest] = tokens;
  const positional: string[] = [];
  const args: Record<string, string> = {};
  for (const token of rest) {
    const eq = token.indexOf("=");
    if (eq > 0) args[token.slice(0, eq)] = token.slice(eq + 1);
    else positional.push(token);
  }
  return { name: name ?? "", positional, args };
}

function render(blocks: Block[], outputs: string[], trailing: string[]): string {
  const parts: string[] = [];
  blocks.forEach((block, n) => {
    parts.push(...block.leading, block.command, "----", outputs[n], "");
  });
  // Keep one trailing newline; drop the blank lines parse collected at the end.
  let text = parts.join("\n");
  const rest = trailing.filter((l) => l.trim() !== "");
  if (rest.length > 0) text += `${rest.join("\n")}\n`;
  return text;
}

const files = readdirSync(dir)
  .filter((f) => f.endsWith(".txt"))
  .sort();

describe("raft interaction scenarios", () => {
  it("has scenario files", () => {
    expect(files.length).toBeGreaterThan(0);
  });
  for (const file of files) {
    it(file, () => {
      const path = join(dir, file);
      const original = readFileSync(path, "utf8");
      const { blocks, trailing } = parse(original);
      const env = new InteractionEnv();
      const outputs = blocks.map((block) => {
        const { name, positional, args } = splitCommand(block.command);
        const out = env.run(name, positional, args);
        return out === "" ? "ok" : out;
      });
      const actual = render(blocks, outputs, trailing);
      if (process.env.CFN_REWRITE === "1") {
        writeFileSync(path, actual);
        return;
      }
      expect(actual).toBe(original);
    });
  }
});
