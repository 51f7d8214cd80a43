// Which model a command serves (--model, or the demo shipped in the package),
// checked before anything is downloaded in full, loaded or started.

import * as path from "node:path";
import { LayerswarmError } from "../errors.js";
import { GGUFFile, readGGUF } from "../format/gguf.js";
import {
  Manifest, ManifestHasher, ModelIdentity, ModelManifest, headerHash, identityOf, modelManifest, readUrlManifestCache, verifyTensors, writeUrlManifestCache,
} from "../format/manifest.js";
import { typeInfo, typeName } from "../format/quant.js";
import { Progress, cachedModel, fetchModel, isRemote, openRemoteSlice, remoteInfo, streamModel, tensorsFor } from "../format/remote.js";
import { logger } from "../swarm/log.js";
import { modelOrDemo } from "./paths.js";

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
    onWarning: (w) => log("warn", "model manifest", { warning: w }),
    onProgress: onProgress && ((bytes, total) => onProgress({ what: path.basename(file), bytes, total, done: bytes === total })),
  });
  log("info", "model manifest", { file, id: m.identity.id, source: m.source, cache: m.cachePath, ms: Math.round(m.ms) });
  return m;
}

// A remote model's cached manifest, when the cache describes the file the
// server has now (size, ETag); undefined otherwise (nothing is downloaded).
export async function cachedRemoteManifest(spec: string): Promise<Manifest | undefined> {
  const info = await remoteInfo(spec);
  try {
    return readUrlManifestCache(info.url, info.bytes, info.etag);
  } catch (e) {
    log("warn", "model manifest", { warning: (e as Error).message });
    return undefined;
  }
}

// A remote model's manifest: cached, or computed by streaming the whole file
// once (hashed as it arrives, never stored) and cached.
export async function remoteManifest(spec: string, header: GGUFFile, onProgress?: Progress): Promise<Manifest> {
  const cached = await cachedRemoteManifest(spec);
  if (cached) return cached;
  const t0 = performance.now();
  const info = await remoteInfo(spec);
  const hasher = new ManifestHasher(header);
  await streamModel(spec, (b) => hasher.push(b), onProgress);
  const m = hasher.finish();
  const at = writeUrlManifestCache(info.url, info.bytes, info.etag ?? "", m);
  log("info", "model manifest", { url: info.url, source: "streamed", cache: at, ms: Math.round(performance.now() - t0) });
  return m;
}

// The gateway's model identity. A gateway holding only part of a remote file
// (local is its sparse copy) checks what it can against the manifest: the
// header's hash, and every tensor it loads itself.
export async function gatewayContent(spec: string, local: string, onProgress?: Progress): Promise<ModelIdentity> {
  if (!isRemote(spec)) return (await localManifest(local, onProgress)).identity;
  const f = readGGUF(local);
  const m = await remoteManifest(spec, f, onProgress);
  const id = identityOf(f, m);
  const h = headerHash(f);
  if (h !== m.header) throw new LayerswarmError("BAD_FILE", `${spec}: the header this gateway read has sha256 ${h.slice(0, 16)}…, the file's manifest says ${m.header.slice(0, 16)}… (the file changed on the server?)`);
  verifyTensors(f, m, tensorsFor(f, [], true), `the manifest of ${spec}`);
  return id;
}
