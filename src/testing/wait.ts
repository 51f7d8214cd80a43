// Polling for process tests: the first truthy value of f() within ms, or an error naming what never happened.
export async function until<T>(f: () => Promise<T | undefined | false>, ms: number, what: string, everyMs = 50): Promise<T> {
  const t0 = performance.now();
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v) return v;
    if (performance.now() - t0 > ms) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
