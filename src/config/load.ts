// Loads the configuration in layers — defaults < profile < file < CFN_* environment < flags — and
// validates the result once. An invalid setting fails here, before anything starts, with a
// CfnError naming the field and what is allowed.

import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { CfnError } from "../errors.js";
import { type Config, configSchema, type DeepPartial, PROFILES } from "./schema.js";

export interface LoadConfigOptions {
  /** YAML or JSON file; CFN_CONFIG names one when this is absent. */
  file?: string;
  /** Environment to read CFN_* from (process.env by default). */
  env?: NodeJS.ProcessEnv;
  /** Highest layer: values from command-line flags. */
  overrides?: DeepPartial<Config>;
}

type Plain = Record<string, unknown>;

/** CFN_BUS_INBOX_DEPTH_MAX ↔ bus.inboxDepthMax, for every leaf of the schema. */
export function environmentName(path: string[]): string {
  return `CFN_${path.map((part) => part.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase()).join("_")}`;
}

/** Every leaf path of the schema with its default, for docs and env mapping. */
export function settingPaths(): Array<{ path: string[]; defaultValue: unknown }> {
  const defaults = configSchema.parse({}) as Plain;
  const out: Array<{ path: string[]; defaultValue: unknown }> = [];
  const walk = (value: unknown, path: string[]) => {
    // An empty mapping (e.g. node.peers) is a setting of its own, given as JSON in the environment.
    if (
      value !== null &&
      typeof value === "object" &&
      !Array.isArray(value) &&
      Object.keys(value).length > 0
    ) {
      for (const [key, child] of Object.entries(value as Plain)) walk(child, [...path, key]);
    } else {
      out.push({ path, defaultValue: value });
    }
  };
  walk(defaults, []);
  return out;
}

function readFileLayer(file: string): Plain {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new CfnError(
      "CFN_ERR_CONFIG_FILE",
      `cannot read config file ${file}: ${(error as Error).message}`,
      {
        file,
      },
    );
  }
  let parsed: unknown;
  try {
    parsed = file.endsWith(".json") ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    throw new CfnError(
      "CFN_ERR_CONFIG_FILE",
      `cannot parse config file ${file}: ${(error as Error).message}`,
      {
        file,
      },
    );
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new CfnError("CFN_ERR_CONFIG_FILE", `config file ${file} must hold a mapping at the top level`, {
      file,
    });
  }
  return parsed as Plain;
}

function coerceEnvValue(raw: string, defaultValue: unknown): unknown {
  if (typeof defaultValue === "number") {
    const trimmed = raw.trim();
    return trimmed !== "" && Number.isFinite(Number(trimmed)) ? Number(trimmed) : raw;
  }
  if (defaultValue !== null && typeof defaultValue === "object") {
    try {
      return JSON.parse(raw);
    } catch {
      return raw; // the schema names the field and what it expects
    }
  }
  if (typeof defaultValue === "boolean") {
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    return raw;
  }
  return raw;
}

function readEnvLayer(env: NodeJS.ProcessEnv): Plain {
  const layer: Plain = {};
  for (const { path, defaultValue } of settingPaths()) {
    const raw = env[environmentName(path)];
    if (raw === undefined) continue;
    setPath(layer, path, coerceEnvValue(raw, defaultValue));
  }
  return layer;
}

function setPath(target: Plain, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (typeof node[key] !== "object" || node[key] === null) node[key] = {};
    node = node[key] as Plain;
  }
  node[path[path.length - 1]] = value;
}

function merge(base: Plain, layer: Plain): Plain {
  const out: Plain = { ...base };
  for (const [key, value] of Object.entries(layer)) {
    if (value === undefined) continue;
    const current = out[key];
    if (
      value !== null &&
      typeof value === "object" &&
      !Array.isArray(value) &&
      current !== null &&
      typeof current === "object" &&
      !Array.isArray(current)
    ) {
      out[key] = merge(current as Plain, value as Plain);
    } else {
      out[key] = value;
    }
  }
  return out;
}

/** Turns zod issues into one message per field: "bus.inboxDepthMax: Too small: expected number to be >=1". */
export function describeIssues(issues: z.core.$ZodIssue[]): string {
  return issues
    .map((issue) => {
      const field = issue.path.join(".") || "(top level)";
      return `${field}: ${issue.message}`;
    })
    .join("; ");
}

export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env;
  const file = options.file ?? env.CFN_CONFIG;
  const fileLayer = file ? readFileLayer(file) : {};
  const envLayer = readEnvLayer(env);
  const overrides = (options.overrides ?? {}) as Plain;

  // The profile decides a layer of its own, so find it first from the higher layers.
  const profileName = (overrides.profile ?? envLayer.profile ?? fileLayer.profile ?? "dev") as string;
  const profile = PROFILES[profileName as Config["profile"]] as Plain | undefined;
  if (!profile) {
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      `profile: must be one of dev, staging, prod (got ${JSON.stringify(profileName)})`,
      { field: "profile" },
    );
  }

  const merged = [profile, fileLayer, envLayer, overrides].reduce(merge, {} as Plain);
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const first = result.error.issues[0];
    throw new CfnError(
      "CFN_ERR_CONFIG_INVALID",
      `invalid configuration: ${describeIssues(result.error.issues)}`,
      {
        field: first?.path.join("."),
        issues: result.error.issues.map((issue) => ({ field: issue.path.join("."), message: issue.message })),
      },
    );
  }
  return result.data;
}

/** The bus directory of a config: <bus.root>/<bus.name>. */
export function busDirectory(config: Config): string {
  return `${config.bus.root}/${config.bus.name}`;
}
