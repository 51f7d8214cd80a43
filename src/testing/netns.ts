// A small internet in network namespaces, for NAT tests: an "internet"
// namespace with a bridge, public hosts on it, and private hosts each behind
// its own NAT router (a namespace with an nftables masquerade that, like a
// home router, drops every connection that starts outside). Only addresses
// inside the namespaces created here are used (10.77.0.0/16, and 11.77.0.0/24
// as a public-looking range: libp2p's DCUtR dials only addresses it deems
// public); nothing in the namespace the test runs in changes. Everything is
// removed by destroy(), and at exit if a test dies first. Needs root, `ip`
// (iproute2) and `nft` (nftables); available() says what is missing.

import { ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";

function run(cmd: string, args: string[], input?: string): void {
  const r = spawnSync(cmd, args, { input, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${(r.stderr || r.stdout || `exit ${r.status}`).trim()}`);
}

export function netnsAvailable(): { ok: true } | { ok: false; why: string } {
  if (process.getuid?.() !== 0) return { ok: false, why: "not root (network namespaces and nftables need root)" };
  for (const [tool, pkg] of [["ip", "iproute2"], ["nft", "nftables"], ["tc", "iproute2"]]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) return { ok: false, why: `${tool} is missing (Debian package ${pkg})` };
  }
  const probe = `lsprobe${process.pid}`;
  const r = spawnSync("ip", ["netns", "add", probe], { encoding: "utf8" });
  spawnSync("ip", ["netns", "del", probe]);
  if (r.status !== 0) return { ok: false, why: `cannot create a network namespace: ${r.stderr.trim()}` };
  return { ok: true };
}

export const PUBLIC_NET = "11.77.0.0/24"; // public-looking, on the internet bridge only

export interface Host {
  name: string;
  ns: string;
  ip: string; // its own address (behind a NAT: private, 10.77.K.2)
  seenAs: string; // the address others see it at (its NAT's public side, or ip)
  dev: string; // its interface (for tc)
  wire?: string; // on the internet bridge, the other end of its link (public hosts)
}

export class NetLab {
  readonly hosts = new Map<string, Host>();
  private namespaces: string[] = [];
  private nats = 0;
  private veths = 0;
  private procs: ChildProcess[] = [];
  private readonly inet: string;
  private onExit = () => this.destroySync();

  private constructor(readonly prefix: string) {
    this.inet = `${prefix}-inet`;
    process.once("exit", this.onExit);
  }

  static create(): NetLab {
    const lab = new NetLab(`ls${process.pid}`);
    try {
      lab.addNs(lab.inet);
      run("ip", ["-n", lab.inet, "link", "add", "br0", "type", "bridge"]);
      run("ip", ["-n", lab.inet, "link", "set", "br0", "up"]);
    } catch (e) {
      lab.destroySync();
      throw e;
    }
    return lab;
  }

  private addNs(ns: string): void {
    run("ip", ["netns", "add", ns]);
    this.namespaces.push(ns);
    run("ip", ["-n", ns, "link", "set", "lo", "up"]);
  }

  // A veth from ns to the internet bridge; returns its name in ns.
  private toBridge(ns: string, cidrs: string[]): string {
    const v = `${this.prefix.slice(-6)}v${this.veths++}`;
    run("ip", ["link", "add", `${v}a`, "netns", ns, "type", "veth", "peer", "name", `${v}b`, "netns", this.inet]);
    for (const c of cidrs) run("ip", ["-n", ns, "addr", "add", c, "dev", `${v}a`]);
    run("ip", ["-n", ns, "link", "set", `${v}a`, "up"]);
    run("ip", ["-n", this.inet, "link", "set", `${v}b`, "master", "br0", "up"]);
    // the public-looking range is on the same wire: reachable from everyone on it
    if (!cidrs.some((c) => c.startsWith("11.77.0."))) run("ip", ["-n", ns, "route", "add", PUBLIC_NET, "dev", `${v}a`]);
    return `${v}a`;
  }

  // A host on the internet at 10.77.0.<n> (and 11.77.0.<n> if publicLooking).
  addPublic(name: string, n: number, o: { publicLooking?: boolean } = {}): Host {
    const ns = `${this.prefix}-${name}`;
    this.addNs(ns);
    const ip = `10.77.0.${n}`;
    const dev = this.toBridge(ns, [`${ip}/24`, ...(o.publicLooking ? [`11.77.0.${n}/24`] : [])]);
    const h = { name, ns, ip, seenAs: ip, dev, wire: dev.replace(/a$/, "b") };
    this.hosts.set(name, h);
    return h;
  }

  // A host at 10.77.<k>.2 behind its own NAT router, seen outside as 10.77.0.<100+k>.
  addNatted(name: string): Host {
    const k = ++this.nats;
    const router = `${this.prefix}-nat${k}`, ns = `${this.prefix}-${name}`;
    this.addNs(router);
    this.addNs(ns);
    const wanIp = `10.77.0.${100 + k}`;
    const wan = this.toBridge(router, [`${wanIp}/24`]);
    const v = `${this.prefix.slice(-6)}l${k}`;
    run("ip", ["link", "add", `${v}a`, "netns", ns, "type", "veth", "peer", "name", `${v}b`, "netns", router]);
    run("ip", ["-n", router, "addr", "add", `10.77.${k}.1/24`, "dev", `${v}b`]);
    run("ip", ["-n", router, "link", "set", `${v}b`, "up"]);
    run("ip", ["-n", ns, "addr", "add", `10.77.${k}.2/24`, "dev", `${v}a`]);
    run("ip", ["-n", ns, "link", "set", `${v}a`, "up"]);
    run("ip", ["-n", ns, "route", "add", "default", "via", `10.77.${k}.1`]);
    run("ip", ["netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // a home router: outgoing connections masqueraded; nothing that starts outside gets in
    run("ip", ["netns", "exec", router, "nft", "-f", "-"], `
table ip nat {
  chain outbound { type nat hook postrouting priority 100; oifname "${wan}" masquerade; }
}
table inet filter {
  chain forwarding { type filter hook forward priority 0; policy drop; ct state established,related accept; iifname "${v}b" accept; }
  chain inbound { type filter hook input priority 0; policy accept; iifname "${wan}" ct state new drop; }
}
`);
    const h = { name, ns, ip: `10.77.${k}.2`, seenAs: wanIp, dev: `${v}a` };
    this.hosts.set(name, h);
    return h;
  }

  // Limit what a public host sends and receives (tbf on both ends of its link), e.g. "20mbit"; null: no limit.
  limitRate(h: Host, rate: string | null): void {
    for (const [ns, dev] of [[h.ns, h.dev], [this.inet, h.wire]] as const) {
      if (!dev) continue;
      if (rate) run("ip", ["netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", "32kb", "latency", "400ms"]);
      else spawnSync("ip", ["netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"]);
    }
  }

  // A process inside a host's namespace (killed by destroy()).
  spawn(h: Host, cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    const p = spawn("ip", ["netns", "exec", h.ns, cmd, ...args], { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, ...env } });
    this.procs.push(p);
    return p;
  }

  // Run a command inside a host's namespace and return its stdout.
  exec(h: Host, cmd: string, args: string[], input?: string, timeoutMs = 600_000): string {
    return execFileSync("ip", ["netns", "exec", h.ns, cmd, ...args], { input, encoding: "utf8", timeout: timeoutMs, maxBuffer: 64 * 2 ** 20 });
  }

  destroySync(): void {
    for (const p of this.procs) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    this.procs = [];
    for (const ns of this.namespaces.reverse()) spawnSync("ip", ["netns", "del", ns]);
    this.namespaces = [];
    process.off("exit", this.onExit);
  }

  async destroy(): Promise<void> {
    const alive = this.procs.filter((p) => p.exitCode === null && p.signalCode === null);
    for (const p of alive) p.kill("SIGKILL");
    await Promise.all(alive.map((p) => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once("exit", r)))));
    this.destroySync();
  }
}
