// Structured, scoped logs on stderr: one JSON object per line. Never pass
// prompts, generated text, token ids or secrets here.

export type Level = "debug" | "info" | "warn" | "error";
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const threshold = order[(process.env.LAYERSWARM_LOG as Level) ?? "info"] ?? 20;

export interface Logger {
  (level: Level, event: string, fields?: Record<string, unknown>): void;
}

export function logger(scope: string): Logger {
  return (level, event, fields = {}) => {
    if (order[level] < threshold) return;
    process.stderr.write(JSON.stringify({ t: new Date().toISOString(), level, scope, event, ...fields }) + "\n");
  };
}
