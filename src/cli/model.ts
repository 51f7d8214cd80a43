// Which model a command serves (--model, or the demo shipped in the package),
// checked before anything is downloaded in full, loaded or started.

import * as path from "node:path";
import { LayerswarmError } from "../errors.js";
import { GGUFFile, readGGUF } from "../format/gguf.js";
import {
  Manifest, ManifestHasher, ModelIdentity, ModelManifest, headerHash, identityOf, manifestId, modelManifest, readUrlManifestCache, urlManifestCachePath, verifyTensors,
  writeUrlManifestCache,
} from "../format/manifest.js";
import { typeInfo, typeName } from "../format/quant.js";
import { Progress, cachedModel, fetchModel, isRemote, openRemoteSlice, remoteInfo, streamModel, tensorsFor } from "../format/remote.js";
import { configFromGGUF } from "../model/config.js";
import { Discovery } from "../swarm/discovery.js";
import { logger } from "../swarm/log.js";
import { manifestFromPeers } from "../swarm/manifests.js";
import { modelFingerprint } from "../swarm/node/index.js";
import { providerKeys } from "../swarm/protocol/index.js";
import { Transport } from "../swarm/transport.js";
import { PACKAGE_ROOT, modelOrDemo } from "./paths.js";

const log = logger("model");

// Weight types we compute with, from the type table.
export function supportedTypes(): string[] {
  const out: string[] = [];
  for (let t = 0; t < 64; t++) if (typeInfo(t)?.supported) out.push(typeName(t));
  return out;
}

// Every tensor in a type we compute with, or one error naming what is not.
export function checkWeightTypes(f: GGUFFile, spec: string): void {
  const bad = new Map<string, string[]>();
  for (const t of f.tensors.values()) if (!typeInfo(t.type)?.supported) bad.set(typeName(t.type), [...(bad.get(typeName(t.type)) ?? []), t.name]);
  if (bad.size === 0) return;
  const what = [...bad].map(([type, names]) => `${type} (${names.length} tensor${names.length > 1 ? "s" : ""}, e.g. ${names[0]})`).join(", ");
  throw new LayerswarmError("UNSUPPORTED",
    `${spec} holds weight types not supported yet: ${what}; supported: ${supportedTypes().join(", ")}. ` +
    `Choose a file of this model whose types all are (a Q8_0 file often is; \`layerswarm inspect FILE\` lists a file's types)`);
}

// The header of a model: the local file or cached download, else only the
// header fetched from the network.
export async function modelHeader(spec: string, onProgress?: Progress): Promise<GGUFFile> {
  const local = cachedModel(spec); // spec itself when it is a file
  return local ? readGGUF(local) : openRemoteSlice(spec, () => [], onProgress);
}

// --model (or the demo) as a local file: its weight types checked from the
// header first, so an unsupported file is refused before a long download.
export async function resolveModel(given: string | undefined, progress: (label: string) => Progress): Promise<{ spec: string; file: string }> {
  const spec = modelOrDemo(given);
  checkWeightTypes(await modelHeader(spec, progress("header")), spec);
  return { spec, file: await fetchModel(spec, progress("model")) };
}

// A local model file's manifest (format/manifest.ts): from its cache, or
// computed by streaming the file once and cached.
export async function localManifest(file: string, onProgress?: Progress): Promise<ModelManifest> {
  const m = await modelManifest(file, {
    beside: !path.resolve(file).startsWith(PACKAGE_ROOT + path.sep), // never into the installed package (its demo model)
    onWarning: (w) => log("warn", "model manifest", { warning: w }),
    onProgress: onProgress && ((bytes, total) => onProgress({ what: path.basename(file), bytes, total, done: bytes === total })),
  });
  log("info", "model manifest", { file, id: m.identity.id, source: m.source, cache: m.cachePath, ms: Math.round(m.ms) });
  return m;
}

// --model-id: a model id given by someone the user trusts (64 hex digits).
export function parseModelId(s: string | undefined): string | undefined {
  if (s === undefined) return undefined;
  if (!/^[0-9a-f]{64}$/.test(s)) throw new LayerswarmError("BAD_ARGUMENT", `--model-id ${s}: not a model id (64 lowercase hex digits, as a node or gateway logs it at start in "model manifest")`);
  return s;
}

function pinned(id: string, want: string | undefined, what: string): void {
  if (want && id !== want) throw new LayerswarmError("BAD_ARGUMENT", `${what} is the model ${id}, not the --model-id ${want}`);
}

// Manifests from the swarm's peers, checked against a trusted model id (swarm/manifests.ts).
export type PeerManifests = (modelId: string) => Promise<Manifest | undefined>;

// Asks the holders of the model's blocks in the swarm's DHT (local: this process's copy of the header).
export function peerManifests(d: Discovery, t: Transport, local: string): PeerManifests {
  return async (id) => {
    const f = readGGUF(local), cfg = configFromGGUF(f);
    const keys = providerKeys(modelFingerprint(f, cfg), [{ start: 0, end: cfg.nLayers }], cfg.nLayers);
    const r = await manifestFromPeers(d, t, keys, id, { log });
    if (r) log("info", "model manifest from a peer", { peer: r.from, id });
    return r?.manifest;
  };
}

export interface RemoteManifestOptions {
  modelId?: string; // --model-id: the manifest must hash to it
  fromPeers?: PeerManifests; // with a model id, ask the swarm before streaming the file
  stream?: boolean; // stream the file when neither the cache nor a peer has it (default true)
}

// A remote model's manifest, checked against the header held here (and the
// model id when given), then cached by URL, size and ETag: from the cache, else
// from a peer (only with a model id to check it against), else by streaming
// the whole file once (hashed as it arrives, never stored).
export async function remoteManifest(spec: string, header: GGUFFile, onProgress?: Progress, o: RemoteManifestOptions = {}): Promise<Manifest | undefined> {
  const t0 = performance.now();
  const info = await remoteInfo(spec);
  let m: Manifest | undefined, source = "cache";
  try {
    m = readUrlManifestCache(info.url, info.bytes, info.etag);
  } catch (e) {
    log("warn", "model manifest", { warning: (e as Error).message });
  }
  if (m && o.modelId && manifestId(m) !== o.modelId) m = undefined;
  if (!m && o.modelId && o.fromPeers) {
    m = await o.fromPeers(o.modelId);
    source = "peer";
    if (!m) log("warn", "model manifest", { warning: `no peer of the swarm gave the manifest of ${o.modelId.slice(0, 16)}… in time` });
  }
  if (!m && o.stream !== false) {
    const hasher = new ManifestHasher(header);
    await streamModel(spec, (b) => hasher.push(b), onProgress);
    m = hasher.finish();
    source = "streamed";
  }
  if (!m) return undefined;
  identityOf(header, m); // it describes this file's layout and size
  const h = headerHash(header);
  if (h !== m.header) throw new LayerswarmError("BAD_FILE", `${spec}: the header read here has sha256 ${h.slice(0, 16)}…, the manifest (${source}) says ${m.header.slice(0, 16)}… (the file changed on the server?)`);
  pinned(manifestId(m), o.modelId, spec);
  const at = source === "cache" ? urlManifestCachePath(info.url) : writeUrlManifestCache(info.url, info.bytes, info.etag ?? "", m);
  log("info", "model manifest", { url: info.url, id: manifestId(m), source, cache: at, ms: Math.round(performance.now() - t0) });
  return m;
}

// The gateway's model identity. A gateway holding only part of a remote file
// (local is its sparse copy) checks what it can against the manifest: the
// header's hash, and every tensor it loads itself.
export async function gatewayContent(spec: string, local: string, onProgress?: Progress, o: RemoteManifestOptions = {}): Promise<ModelIdentity> {
  if (!isRemote(spec)) {
    const id = (await localManifest(local, onProgress)).identity;
    pinned(id.id, o.modelId, spec);
    return id;
  }
  const f = readGGUF(local);
  const m = (await remoteManifest(spec, f, onProgress, o))!;
  verifyTensors(f, m, tensorsFor(f, [], true), `the manifest of ${spec}`);
  return identityOf(f, m);
}

// A node's manifest: a local file's (cached or computed); for a remote model
// only one found without downloading the file (the cache, or peers when a
// model id says which), else none: its record's layer hashes are then those of
// the bytes it fetched, for gateways to compare.
export async function nodeManifest(spec: string, local: string, onProgress?: Progress, o: RemoteManifestOptions = {}): Promise<Manifest | undefined> {
  if (!isRemote(spec)) {
    const m = await localManifest(local, onProgress);
    pinned(m.identity.id, o.modelId, spec);
    return m.manifest;
  }
  return remoteManifest(spec, readGGUF(local), onProgress, { ...o, stream: false });
}
