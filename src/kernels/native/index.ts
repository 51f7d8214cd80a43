// Native kernels (C++ addon built by node-gyp at install). Registered with the
// dispatcher when the addon loads; otherwise the reference kernels are used.

import { registerNative } from "../index.js";

export function registerNativeKernels(): void {
  registerNative(() => undefined);
}
