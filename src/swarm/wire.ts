// Which hops carry packed values (protocol/planes.ts): packing is lossless, so
// each sender decides per link, alone, by what it measured: a link whose
// receiver takes packed frames, for a frame large enough, when the time it
// saves on that link (the bytes it removes at the link's measured throughput)
// exceeds twice the time packing takes here (packing, and unpacking at the
// other end). A link not yet measured is not packed: on a LAN or loopback the
// CPU costs more than the bytes. `always` and `never` override (tests,
// operators who know their links).

import { LayerswarmError } from "../errors.js";

export type PackMode = "auto" | "always" | "never";

export function parsePackMode(s: string): PackMode {
  if (s === "auto" || s === "always" || s === "never") return s;
  throw new LayerswarmError("BAD_ARGUMENT", `--wire-pack must be auto, always or never, not "${s}"`);
}

const MIN_BYTES = 64 * 1024; // smaller frames: the per-frame cost dominates whatever the link

export class WirePolicy {
  private packMsPerByte = 1 / 50_000; // 50 MB/s until measured
  private ratio = 0.85; // packed/raw size, until measured
  stats = { frames: 0, packedFrames: 0, rawBytes: 0, wireBytes: 0, rows: 0 };

  constructor(readonly mode: PackMode = "auto") {}

  // bytesPerMs: the link's measured throughput (undefined: not measured yet).
  shouldPack(rawBytes: number, receiverTakes: boolean, bytesPerMs: number | undefined): boolean {
    if (!receiverTakes || this.mode === "never") return false;
    if (this.mode === "always") return true;
    if (rawBytes < MIN_BYTES || bytesPerMs === undefined) return false;
    const savedMs = (rawBytes * (1 - this.ratio)) / bytesPerMs;
    return savedMs > 2 * rawBytes * this.packMsPerByte;
  }

  // After encoding a frame: what it cost (ms spent packing, if it tried;
  // packed: whether the frame went packed, i.e. packing made it smaller).
  sent(rawBytes: number, wireBytes: number, rows: number, packMs?: number, packed = packMs !== undefined): void {
    this.stats.frames++;
    this.stats.rawBytes += rawBytes;
    this.stats.wireBytes += wireBytes;
    this.stats.rows += rows;
    if (packMs === undefined) return;
    if (packed) this.stats.packedFrames++;
    this.ratio = 0.8 * this.ratio + 0.2 * Math.min(1, wireBytes / rawBytes);
    this.packMsPerByte = 0.8 * this.packMsPerByte + 0.2 * (packMs / rawBytes);
  }
}
