#!/usr/bin/env node
// The layerswarm command line: the only place everything is wired together.

import { Command, InvalidArgumentError } from "commander";
import { LayerswarmError } from "../errors.js";
import { generateCommand, inspectCommand, convertCommand, synthCommand } from "./commands.js";
import * as path from "node:path";
import { nodeMoveCommand, nodePauseCommand, nodeResumeCommand } from "./control.js";
import { stateDir } from "./paths.js";
import { collect, configOptions, printSettings, withSettings } from "./config.js";
import { supportedTypeNames } from "../format/quant.js";
import { PRESETS } from "../format/presets.js";
import { bootstrapCommand, gatewayCommand, generateOverSwarm, nodeCommand, runCommand, statusCommand } from "./swarm.js";

function int(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`"${v}" is not an integer`);
  return n;
}
function fraction(v: string): number {
  const n = Number(v);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError(`"${v}" is not a fraction between 0 and 1`);
  return n;
}
function speculateMode(v: string): "off" | "ngram" {
  if (v !== "off" && v !== "ngram") throw new InvalidArgumentError(`"${v}" is not off or ngram`);
  return v;
}
function num(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`"${v}" is not a number`);
  return n;
}

// A long-running node or gateway must not die of one stray rejection that a
// peer provoked: log it (no payloads) and keep serving everyone else.
process.on("unhandledRejection", (e) => {
  process.stderr.write(JSON.stringify({ t: new Date().toISOString(), level: "error", scope: "process", event: "unhandled rejection", code: (e as LayerswarmError)?.code, error: String((e as Error)?.message ?? e).slice(0, 300) }) + "\n");
});

const program = new Command("layerswarm")
  .enablePositionalOptions() // a subcommand's options are its own (`node move --layers` is not `node --layers`)
  .description("Run one large language model across many machines, each holding a slice of its layers")
  .version("0.1.0");

program
  .command("generate")
  .description("stream a completion of PROMPT to stdout")
  .argument("<prompt>", "the prompt text")
  .option("-m, --model <file|url|hf:owner/repo/file>", "GGUF model: a file, an http(s) URL or hf:<owner>/<repo>/<file.gguf> (default: the built-in stories260K demo)")
  .option("-n, --max-tokens <n>", "most tokens to generate", int, 256)
  .option("-t, --temperature <t>", "sampling temperature (0 = greedy)", num, 0)
  .option("--top-p <p>", "nucleus sampling mass", num, 1)
  .option("--top-k <k>", "sample among the k most likely tokens (0 = all)", int, 0)
  .option("--min-p <p>", "drop tokens below p times the top probability", num, 0)
  .option("--repeat-penalty <r>", "repetition penalty (1 = off)", num, 1)
  .option("-s, --seed <s>", "random seed", int)
  .option("--threads <k>", "compute threads", int, 1)
  .option("--chunk <n>", "prefill chunk size in tokens", int, 64)
  .option("--kernels <backend>", "auto | native | ref (default: $LAYERSWARM_KERNELS or auto)")
  .option("--slices <ranges>", "run the layers as separate slices, e.g. 0:2,2:5 (testing)")
  .option("--no-bos", "do not add the BOS token")
  .option("--chat", "send PROMPT as a user message through the model's chat template")
  .option("--stats", "print speed figures to stderr")
  .option("--nodes <n>", "run through a local swarm of N node processes", int)
  .option("--speculate <mode>", "speculative decoding: ngram (the default: drafts by prompt lookup, verified in one trip through the layers; the same tokens, fewer trips) | off", speculateMode, "ngram")
  .action((prompt, o) => (o.nodes ? generateOverSwarm(prompt, o) : generateCommand(prompt, o)));

// The long-running commands' options, defined once: for the command itself and
// for `layerswarm config <command>`, which prints what they resolve to.
const runOptions = (c: Command) => c
  .option("-m, --model <file|url|hf:owner/repo/file>", "GGUF model: a file, an http(s) URL or hf:<owner>/<repo>/<file.gguf> (default: the built-in stories260K demo, a toy)")
  .option("--nodes <n>", "node processes", int, 3)
  .option("--port <port>", "HTTP port (0: any free port)", int, 8080)
  .option("--host <host>", "HTTP address", "127.0.0.1")
  .option("--api-key <key>", "require this key (Authorization: Bearer KEY)")
  .option("--threads <k>", "compute threads per node", int, 1)
  .option("--step-timeout <ms>", "a step slower than this fails over to other nodes", int, 30_000)
  .option("--wire <t>", "hidden states on the wire: f32 (exact, the default) | bf16 | f16; bf16 and f16 round at every stage boundary, so their tokens depend on where the boundaries are: reproducible only for a fixed split")
  .option("--dtype <t>", "old name of --wire")
  .option("--wire-pack <mode>", "lossless packing of hidden states (byte planes, Huffman): auto (on links whose measured speed makes it pay) | always | never", "auto")
  .option("--swarm-key <key>", "pre-shared key (64 hex or a swarm.key file): a private swarm")
  .option("--local-layers <k>", "run the first K layers on the gateway: no node sees embedding rows", int, 0)
  .option("--local-tail <k>", "run the last K layers on the gateway: no node returns rows the head reads directly", int, 0)
  .option("--speculate <mode>", "speculative decoding: ngram (the default: drafts by prompt lookup, verified in one trip through the layers; the same tokens, fewer trips) | off", speculateMode, "ngram")
  .option("--verify <mode>", "check the nodes: audit (the default: a share of sessions, and every session while a node is new here, re-computed by other nodes and compared exactly; cheats are banned with a proof) | strict (every step on two routes disjoint by peer and address; tokens released only when both agree bit for bit: twice the compute) | off", "audit")
  .option("--audit-rate <fraction>", "the share of sessions audited in audit mode", fraction, 0.05)
  .option("--cors-origin <origin>", "also let web pages from this origin call the API (repeatable; * for any)", collect);

const nodeOptions = (c: Command) => c
  // required, but not as commander's requiredOption: it would be asked of `node move` too
  .option("-m, --model <file|url|hf:owner/repo/file>", "GGUF model (required); from a URL only this node's tensors are fetched (HTTP range requests, cached)")
  .option("--model-id <hex>", "the model's id (its manifest's hash, which nodes and gateways log at start), from someone you trust: the model file must be that model, and with a URL model its manifest is taken from any peer of the swarm that has it instead of streaming the file")
  .option("--bootstrap <address>", "a peer of the swarm to start from: multiaddr (with or without /p2p/) or host:port (repeatable)", collect)
  .option("--no-mdns", "do not look for the swarm on the LAN by mDNS")
  .option("--relay <address>", "when this peer turns out unreachable (behind a NAT), reserve a slot on this relay: a multiaddr ending in /p2p/<peer id> (repeatable; default: any reachable peer of the swarm)", collect)
  .option("--join <address>", "announce to this gateway directly: its multiaddr ending in /p2p/<peer id> (repeatable)", collect)
  .option("--layers <range>", "START:END (half-open), several separated by commas, or auto", "auto")
  .option("--listen <multiaddr>", "swarm address to listen on (repeatable; default: every interface, any port)", collect)
  .option("--max-memory <size>", "memory this node may use, e.g. 6GB (default: 80% of free memory)")
  .option("--threads <k>", "compute threads", int, 1)
  .option("--max-sessions <n>", "sessions held at once", int, 256)
  .option("--key <file>", "ed25519 identity, created if missing (default: node.key in the state directory)")
  .option("--swarm-key <key>", "pre-shared swarm key (64 hex or a swarm.key file)")
  .option("--allow <file>", "serve only the gateways whose peer ids this file lists (one per line)")
  .option("--name <name>", "a name shown on the dashboard")
  .option("--rebalance <seconds>", "look about this often (jittered) whether moving to other layers would help the swarm, and move; off by default (0) because it balances by the speed and demand other nodes claim (a move gives up layers only where it checked another holder with a real step)", num, 0)
  .option("--drain-timeout <ms>", "a move, or a stop (SIGTERM), lets live sessions finish this long, then hands them over by replay", int, 60_000)
  .option("--no-control", "no local control socket (then `layerswarm node move` cannot reach this node)")
  .option("--wire-pack <mode>", "lossless packing of hidden states to next stages that take it: auto (where the link's measured speed makes it pay) | always | never", "auto");

const gatewayOptions = (c: Command) => c
  // required, but checked by gatewayCommand: commander checks required options before a config file is read
  .option("-m, --model <file|url|hf:owner/repo/file>", "GGUF model (required); from a URL only the embedding and head are fetched")
  .option("--model-id <hex>", "the model's id (its manifest's hash, which nodes and gateways log at start), from someone you trust: the model file must be that model, and with a URL model its manifest is taken from any peer of the swarm that has it instead of streaming the file")
  .option("--bootstrap <address>", "a peer of the swarm to start from: multiaddr (with or without /p2p/) or host:port (repeatable)", collect)
  .option("--no-mdns", "do not look for the swarm on the LAN by mDNS")
  .option("--listen <multiaddr>", "swarm address to listen on (repeatable; default: every interface, any port)", collect)
  .option("--port <port>", "HTTP port (0: any free port)", int, 8080)
  .option("--host <host>", "HTTP address", "127.0.0.1")
  .option("--api-key <key>", "require this key (Authorization: Bearer KEY)")
  .option("--key <file>", "ed25519 identity, created if missing (default: gateway.key in the state directory)")
  .option("--swarm-key <key>", "pre-shared swarm key (64 hex or a swarm.key file)")
  .option("--allow <file>", "route only through the nodes whose peer ids this file lists (one per line)")
  .option("--relay <address>", "when this peer turns out unreachable (behind a NAT), reserve a slot on this relay: a multiaddr ending in /p2p/<peer id> (repeatable; default: any reachable peer of the swarm)", collect)
  .option("--local-layers <k>", "run the first K layers here: no node sees embedding rows", int, 0)
  .option("--local-tail <k>", "run the last K layers here: no node returns rows the head reads directly", int, 0)
  .option("--cors-origin <origin>", "also let web pages from this origin call the API (repeatable; * for any)", collect)
  .option("--threads <k>", "threads for the head", int, 1)
  .option("--step-timeout <ms>", "a step slower than this fails over", int, 30_000)
  .option("--wire <t>", "hidden states on the wire: f32 (exact, the default) | bf16 | f16; bf16 and f16 round at every stage boundary, so their tokens depend on where the boundaries are: reproducible only for a fixed split")
  .option("--dtype <t>", "old name of --wire")
  .option("--wire-pack <mode>", "lossless packing of hidden states (byte planes, Huffman): auto (on links whose measured speed makes it pay) | always | never", "auto")
  .option("--speculate <mode>", "speculative decoding: ngram (the default: drafts by prompt lookup, verified in one trip through the layers; the same tokens, fewer trips) | off", speculateMode, "ngram")
  .option("--verify <mode>", "check the nodes: audit (the default: a share of sessions, and every session while a node is new here, re-computed by other nodes and compared exactly; cheats are banned with a proof) | strict (every step on two routes disjoint by peer and address; tokens released only when both agree bit for bit: twice the compute) | off", "audit")
  .option("--audit-rate <fraction>", "the share of sessions audited in audit mode", fraction, 0.05);

withSettings(runOptions(program.command("run")))
  .description("the main job: a gateway and N node processes on this machine, serving the OpenAI API")
  .action((o) => runCommand({ ...o, listen: undefined, key: undefined }));

const node = withSettings(nodeOptions(program.command("node")))
  .description("serve a slice of a model's layers to a swarm (or, with `node move`, move the one running here); SIGTERM or SIGINT drains it (no new sessions, live ones finish or are handed over) and it exits by --drain-timeout, a second signal at once")
  .action(nodeCommand);

withSettings(gatewayOptions(program.command("gateway")))
  .description("find a swarm's nodes (DHT, mDNS, or nodes that --join it) and serve the OpenAI API")
  .action(gatewayCommand);

const bootstrapOptions = (c: Command) => c
  .option("--listen <multiaddr>", "address to listen on, e.g. /ip4/0.0.0.0/tcp/4001 (repeatable; default: every interface, any port)", collect)
  .option("--bootstrap <address>", "another peer of the swarm to connect to (repeatable)", collect)
  .option("--key <file>", "ed25519 identity, created if missing (default: bootstrap.key in the state directory)")
  .option("--swarm-key <key>", "pre-shared swarm key (64 hex or a swarm.key file)")
  .option("--no-mdns", "do not announce this peer on the LAN by mDNS");

// layerswarm config [node|gateway|run|bootstrap] [--config FILE] [flags]: each subcommand
// takes its command's options and prints what they resolve to, and from where.
const config = program.command("config").description("print the effective settings of node (the default), gateway, run or bootstrap and where each came from (flag, env, file, default)");
for (const [name, define] of [["node", nodeOptions], ["gateway", gatewayOptions], ["run", runOptions], ["bootstrap", bootstrapOptions]] as const) {
  const c = configOptions(define(new Command(name)))
    .description(`layerswarm ${name}'s settings`)
    .option("--json", "as JSON");
  c.action(function (this: Command, o: { json?: boolean }) {
    printSettings(this, o);
  });
  config.addCommand(c, { isDefault: name === "node" });
}

node
  .command("move")
  .description("move the node running on this machine with this --key to other layers: it stops opening sessions on the old ones, lets live ones finish or hands them over, then loads the new ones")
  .requiredOption("--layers <range>", "START:END, or auto (where the swarm's throughput is lowest relative to demand)")
  .option("--key <file>", "the node's identity key (default: node.key in the state directory); its control socket lies beside it")
  .option("--drain-timeout <ms>", "let live sessions finish this long, then hand them over by replay", int)
  .option("--force", "move even if the old layers are then held by nobody else")
  .action((o) => nodeMoveCommand({ ...o, key: o.key ?? path.join(stateDir(), "node.key") }));

node
  .command("pause")
  .description("the node running on this machine with this --key stops opening sessions (its owner wants the machine back): live ones finish or are handed over, its layers stay loaded; `node resume` serves again")
  .option("--key <file>", "the node's identity key (default: node.key in the state directory); its control socket lies beside it")
  .option("--drain-timeout <ms>", "let live sessions finish this long, then hand them over by replay", int)
  .action((o) => nodePauseCommand({ ...o, key: o.key ?? path.join(stateDir(), "node.key") }));

node
  .command("resume")
  .description("a paused node opens sessions again")
  .option("--key <file>", "the node's identity key (default: node.key in the state directory)")
  .action((o) => nodeResumeCommand({ ...o, key: o.key ?? path.join(stateDir(), "node.key") }));


withSettings(bootstrapOptions(program.command("bootstrap")))
  .description("run a peer that serves the swarm's DHT and relays for peers behind NATs, for nodes and gateways to --bootstrap from")
  .action(bootstrapCommand);

program
  .command("status")
  .description("print a running swarm's map as a table")
  .requiredOption("--gateway <url>", "the gateway's HTTP address, e.g. http://127.0.0.1:8080")
  .option("--api-key <key>", "API key, if the gateway requires one", process.env.LAYERSWARM_API_KEY)
  .option("--json", "the raw GET /v1/swarm document")
  .action(statusCommand);

program
  .command("inspect")
  .description("print a GGUF file's architecture, shapes, weight types, tokenizer and size per layer")
  .argument("<file>", "GGUF model file")
  .option("--json", "machine-readable output")
  .action(inspectCommand);

program
  .command("convert")
  .description("convert a llama2.c checkpoint and its tokenizer.bin to GGUF")
  .requiredOption("--llama2c <file>", "llama2.c checkpoint (.bin)")
  .requiredOption("--tokenizer <file>", "llama2.c tokenizer.bin")
  .requiredOption("-o, --out <file>", "GGUF file to write")
  .option("--name <name>", "general.name to record")
  .action(convertCommand);

program
  .command("synth")
  .description("write a deterministic random-weight GGUF model of any shape (for tests and benchmarks)")
  .option("--shape <name>", "preset: llama-1b | tiny", "tiny")
  .option("--arch <arch>", "llama | qwen2 | qwen3")
  .option("--dim <n>", "embedding width", int)
  .option("--layers <n>", "transformer layers", int)
  .option("--heads <n>", "attention heads", int)
  .option("--kv-heads <n>", "key/value heads", int)
  .option("--ffn <n>", "feed-forward width", int)
  .option("--vocab <n>", "vocabulary size", int)
  .option("--context <n>", "context length", int)
  .option("--type <type>", `a weight type (${supportedTypeNames().join(" ")}) or a llama.cpp preset's per-tensor mix (${PRESETS.join(" ")})`, "Q8_0")
  .option("--tied", "share the output matrix with the embedding")
  .option("--seed <s>", "random seed", int, 1)
  .option("-o, --out <file>", "write here instead of the cache directory")
  .action(synthCommand);

program.parseAsync().catch((e: unknown) => {
  if (e instanceof LayerswarmError) {
    process.stderr.write(`layerswarm: error [${e.code}]: ${e.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`layerswarm: ${(e as Error)?.stack ?? e}\n`);
  process.exit(1);
});
