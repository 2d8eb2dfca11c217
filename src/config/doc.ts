// Renders the table of every setting (name, environment variable, default, allowed values,
// meaning) from the schema itself, so docs/CONFIGURATION.md cannot drift from the code:
// `cfn config docs` prints it.

import { z } from "zod";
import { environmentName } from "./load.js";
import { configSchema } from "./schema.js";

interface SettingRow {
  path: string;
  env: string;
  defaultValue: string;
  allowed: string;
  description: string;
}

function unwrap(schema: z.ZodType): { inner: z.ZodType; description: string } {
  let current = schema;
  let description = schema.description ?? "";
  while (current instanceof z.ZodDefault || current instanceof z.ZodOptional) {
    current = current.unwrap() as z.ZodType;
    description ||= current.description ?? "";
  }
  return { inner: current, description };
}

function allowedValues(schema: z.ZodType): string {
  if (schema instanceof z.ZodNumber) {
    const min = schema.minValue;
    const max = schema.maxValue;
    const integer = schema.format === "safeint" || schema.isInt ? "integer" : "number";
    return `${integer} ${min ?? "-∞"} … ${max ?? "∞"}`;
  }
  if (schema instanceof z.ZodEnum) return schema.options.join(", ");
  if (schema instanceof z.ZodString) return "string";
  if (schema instanceof z.ZodBoolean) return "true, false";
  return "see description";
}

export function settingRows(): SettingRow[] {
  const defaults = configSchema.parse({}) as Record<string, unknown>;
  const rows: SettingRow[] = [];
  const walk = (shape: Record<string, z.ZodType>, path: string[], defaultsHere: Record<string, unknown>) => {
    for (const [key, field] of Object.entries(shape)) {
      const { inner, description } = unwrap(field);
      const fieldPath = [...path, key];
      if (inner instanceof z.ZodObject) {
        walk(
          inner.shape as Record<string, z.ZodType>,
          fieldPath,
          defaultsHere[key] as Record<string, unknown>,
        );
        continue;
      }
      rows.push({
        path: fieldPath.join("."),
        env: environmentName(fieldPath),
        defaultValue: JSON.stringify(defaultsHere[key]),
        allowed: allowedValues(inner),
        description,
      });
    }
  };
  walk(configSchema.shape as Record<string, z.ZodType>, [], defaults);
  return rows;
}

export function settingsTable(): string {
  const lines = ["| setting | environment | default | allowed | meaning |", "|---|---|---|---|---|"];
  for (const row of settingRows()) {
    const cells = [
      `\`${row.path}\``,
      `\`${row.env}\``,
      `\`${row.defaultValue}\``,
      row.allowed,
      row.description,
    ];
    lines.push(`| ${cells.map((cell) => cell.replace(/\|/g, "\\|")).join(" | ")} |`);
  }
  return lines.join("\n");
}
