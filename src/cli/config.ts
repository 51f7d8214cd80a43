// Settings for the long-running commands (node, gateway, run) from four places,
// in this order of precedence: the command line, LAYERSWARM_* environment
// variables, a JSON config file, the defaults. Everything is derived from
// commander's own option definitions, so a new flag gets its variable and its
// config key without anyone listing it here.

import * as fs from "node:fs";
import * as path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { z } from "zod";
import { LayerswarmError } from "../errors.js";
import { stateDir } from "./paths.js";

export type SettingSource = "flag" | "env" | "file" | "default";

export interface Setting {
  key: string; // the config file's key: the long flag without dashes (and without no-)
  env: string; // its environment variable
  value: unknown;
  source: SettingSource;
  from?: string; // the variable's name or the file's path
}

// Repeatable options accumulate with this argument parser (index.ts uses it).
export const collect = (v: string, prev: string[] = []) => [...prev, v];

// Values never printed by `layerswarm config`: they are secrets.
const SECRET = new Set(["api-key", "swarm-key"]);

// The options a config file or environment may set: every long option but
// --config itself, help and version.
function settable(cmd: Command): Option[] {
  // (--json belongs to `layerswarm config` itself)
  return cmd.options.filter((o) => o.long && !["--config", "--no-config", "--help", "--version", "--json"].includes(o.long));
}

export function configKey(o: Option): string {
  return o.long!.replace(/^--/, "").replace(/^no-/, o.negate ? "" : "no-");
}

// --max-memory -> LAYERSWARM_MAX_MEMORY; --no-mdns -> LAYERSWARM_NO_MDNS (set to 1 or true to turn mDNS off)
export function envName(o: Option): string {
  return "LAYERSWARM_" + o.long!.replace(/^--/, "").toUpperCase().replace(/-/g, "_");
}

// The config file a command reads: --config FILE, else LAYERSWARM_CONFIG, else
// <state dir>/<command>.json if it exists (--no-config: none).
export function configPath(cmd: Command, env: NodeJS.ProcessEnv): { path?: string; explicit: boolean } {
  const flag = cmd.getOptionValue("config") as string | false | undefined;
  if (flag === false) return { explicit: false };
  if (typeof flag === "string") return { path: flag, explicit: true };
  if (env.LAYERSWARM_CONFIG) return { path: env.LAYERSWARM_CONFIG, explicit: true };
  const def = path.join(stateDir(), `${cmd.name()}.json`);
  return fs.existsSync(def) ? { path: def, explicit: false } : { explicit: false };
}

function boolOf(v: string, where: string): boolean {
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)?$/i.test(v)) return false;
  throw new LayerswarmError("BAD_ARGUMENT", `${where}: "${v}" is not true or false (1/0, yes/no)`);
}

// An option's value from text (an environment variable or a file's string),
// checked by the option's own parser so that a file and a flag are held to the same rules.
function parseValue(o: Option, text: string | string[], where: string): unknown {
  try {
    if (o.parseArg === collect) return ([] as string[]).concat(text).reduce<string[]>((acc, v) => collect(v, acc), []);
    if (Array.isArray(text)) throw new InvalidArgumentError("a list where one value is expected");
    if (o.parseArg) return o.parseArg(text, undefined);
    return text;
  } catch (e) {
    const msg = e instanceof InvalidArgumentError || e instanceof LayerswarmError ? e.message : String(e);
    throw new LayerswarmError("BAD_ARGUMENT", `${where}: ${msg}`);
  }
}

function fileSchema(opts: Option[]) {
  const shape: Record<string, z.ZodType> = {};
  for (const o of opts) {
    const key = configKey(o);
    shape[key] = (o.required || o.optional
      ? o.parseArg === collect
        ? z.union([z.string(), z.array(z.string())])
        : o.parseArg
          ? z.union([z.number(), z.string()])
          : z.string()
      : z.boolean()
    ).optional();
  }
  return z.strictObject(shape);
}

// The file's settings, validated: unknown keys and values of the wrong kind are
// refused with the key and the file named.
export function readConfigFile(file: string, cmd: Command): Map<Option, unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new LayerswarmError("BAD_ARGUMENT", `config file ${file}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message}`);
  }
  const opts = settable(cmd);
  const r = fileSchema(opts).safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    const keys = issue.code === "unrecognized_keys" ? issue.keys : issue.path.map(String);
    const what = issue.code === "unrecognized_keys"
      ? `unknown key${keys.length > 1 ? "s" : ""} ${keys.map((k) => `"${k}"`).join(", ")} (layerswarm ${cmd.name()} takes: ${opts.map(configKey).join(", ")})`
      : keys.length ? `"${keys.join(".")}": ${issue.message}` : `${issue.message} (the file must hold one JSON object)`;
    throw new LayerswarmError("BAD_ARGUMENT", `config file ${file}: ${what}`);
  }
  const out = new Map<Option, unknown>();
  for (const o of opts) {
    const v = (r.data as Record<string, unknown>)[configKey(o)];
    if (v === undefined) continue;
    const where = `config file ${file}: "${configKey(o)}"`;
    out.set(o, typeof v === "boolean" ? v : parseValue(o, typeof v === "number" ? String(v) : (v as string | string[]), where));
  }
  return out;
}

// Fill in what the command line left at its default, from the environment then
// the file; returns every setting with where it came from.
export function applySettings(cmd: Command, env: NodeJS.ProcessEnv = process.env): Setting[] {
  const { path: file } = configPath(cmd, env);
  const fromFile = file ? readConfigFile(file, cmd) : new Map<Option, unknown>();
  const settings: Setting[] = [];
  for (const o of settable(cmd)) {
    const attr = o.attributeName(), key = configKey(o), name = envName(o);
    const src = cmd.getOptionValueSource(attr);
    const base = { key, env: name };
    if (src === "cli") {
      settings.push({ ...base, value: cmd.getOptionValue(attr), source: "flag" });
    } else if (env[name] !== undefined) {
      const where = `environment variable ${name}`;
      // a boolean flag's variable says whether the flag is given; --no-x's turns x off
      const v = o.required || o.optional ? parseValue(o, o.parseArg === collect ? env[name]!.split(/[\s,]+/).filter(Boolean) : env[name]!, where) : o.negate ? !boolOf(env[name]!, where) : boolOf(env[name]!, where);
      cmd.setOptionValueWithSource(attr, v, "env");
      settings.push({ ...base, value: v, source: "env", from: name });
    } else if (fromFile.has(o)) {
      cmd.setOptionValueWithSource(attr, fromFile.get(o), "config");
      settings.push({ ...base, value: fromFile.get(o), source: "file", from: file });
    } else {
      settings.push({ ...base, value: cmd.getOptionValue(attr), source: "default" });
    }
  }
  return settings;
}

// Adds --config / --no-config to a command and fills its options from the
// environment and the file just before its action runs.
// The LAYERSWARM_<FLAG> variables of each command defined withSettings, by
// command name: `run` keeps its operator's node variables from the nodes it starts.
export const FLAG_VARIABLES = new Map<string, string[]>();

export function withSettings(cmd: Command): Command {
  FLAG_VARIABLES.set(cmd.name(), settable(cmd).map(envName));
  configOptions(cmd).hook("preAction", (self, action) => {
    if (self === action) applySettings(self);
  });
  return cmd;
}

export function configOptions(cmd: Command): Command {
  return cmd
    .option("--config <file>", `settings as JSON, keys named as the flags (default: ${cmd.name()}.json in the state directory, if there); LAYERSWARM_<FLAG> variables override it, flags override both`)
    .option("--no-config", "read no config file");
}

export function redact(s: Setting): string {
  if (s.value === undefined) return "-";
  if (SECRET.has(s.key)) return "(set)";
  return Array.isArray(s.value) ? s.value.join(",") : String(s.value);
}

// layerswarm config [node|gateway|run]: the effective settings and where each came from.
export function printSettings(cmd: Command, o: { json?: boolean }, out: (s: string) => void = (s) => process.stdout.write(s)): void {
  const settings = applySettings(cmd);
  const { path: file } = configPath(cmd, process.env);
  if (o.json) {
    out(JSON.stringify({ command: cmd.name(), configFile: file ?? null, settings: settings.map((s) => ({ ...s, value: SECRET.has(s.key) && s.value !== undefined ? "(set)" : s.value ?? null })) }, null, 2) + "\n");
    return;
  }
  const rows = [["setting", "value", "from", "variable"], ...settings.map((s) => [s.key, redact(s), s.source === "file" ? `file ${s.from}` : s.source, s.env])];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  out(`layerswarm ${cmd.name()}: ${file ? `config file ${file}` : "no config file"}\n` + rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()).join("\n") + "\n");
}
