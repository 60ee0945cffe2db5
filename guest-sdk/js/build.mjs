#!/usr/bin/env node
// Builds a kp handler component from a JavaScript module with componentize-js (through its API:
// the `jco componentize` CLI of jco 1.35 fails out of the box, see guest-sdk/js/README.md).
//   node build.mjs HANDLER.js OUT.wasm
// The WIT is wit/ beside this script (a scaffolded project) or the repository's wit/.
import { componentize } from '@bytecodealliance/componentize-js';
import { existsSync } from 'node:fs';
import { writeFile, rename } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const [source, out] = process.argv.slice(2);
if (!source || !out) {
  console.error('usage: node build.mjs HANDLER.js OUT.wasm');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const witPath = [join(here, 'wit'), join(here, '../../wit')].find((p) => existsSync(join(p, 'kp.wit')));
if (!witPath) {
  console.error(`build.mjs: no wit/kp.wit beside ${here} or in the repository`);
  process.exit(1);
}
// componentize-js resolves a module's relative imports inside the working directory, so work
// from the nearest folder holding both the handler and this SDK (kp.js).
const sourcePath = resolve(source);
const outPath = resolve(out);
// (componentize-js mishandles `/` as the working directory: then use the handler's folder.)
const ancestor = commonAncestor(dirname(sourcePath), here);
process.chdir(ancestor === sep ? dirname(sourcePath) : ancestor);
const started = Date.now();
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName: 'kp:plugin/handler-world@0.1.0',
  // stdio stays: uncaught errors and console.log reach the host's log. Clocks and random are
  // WASI imports the host grants only when the manifest asks ([capabilities]); the engine's
  // own use of them is satisfied by the host's deterministic defaults.
  disableFeatures: ['http', 'fetch-event'],
});
// Write then rename, so a kp watching the output folder never sees half a module.
const tmp = `${outPath}.tmp`;
await writeFile(tmp, component);
await rename(tmp, outPath);
console.error(`built ${out} (${(component.length / 1e6).toFixed(1)} MB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);

function commonAncestor(a, b) {
  const pa = a.split(sep);
  const pb = b.split(sep);
  let i = 0;
  while (i < pa.length && i < pb.length && pa[i] === pb[i]) i++;
  return pa.slice(0, i).join(sep) || sep;
}
