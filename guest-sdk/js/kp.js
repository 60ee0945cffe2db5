// kp guest SDK for JavaScript: helpers over kp's WIT world (wit/kp.wit), for handlers built with
// componentize-js (see build.mjs). Import it with a relative path: `import { ... } from './kp.js'`.
//
//   defineHandler({ init?, handle })  -> the object to export as `handler`
//   text(bytes), bytes(text), json(msg)  -> decoding helpers (json throws BadMessage on bad JSON)
//   header(msg, name), headerText(msg, name)
//   output({ topic?, key?, value?, headers?, partition? }) -> one output record
//   BadMessage, RetryLater  -> throw these to refuse a message or ask for a retry
//   log.info(...), config.get(key), config.entries()
import { log as hostLog } from 'kp:plugin/logging@0.1.0';
import { get as configGet, entries as configEntries } from 'kp:plugin/config@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A permanent failure: this message can never be handled (the plugin's on-failure policy applies). */
export class BadMessage extends Error {}

/** A transient failure: kp retries the same message with backoff. */
export class RetryLater extends Error {}

/** UTF-8 text of a byte array; null for an absent key/value. */
export function text(value) {
  return value == null ? null : decoder.decode(value);
}

/** UTF-8 bytes of a string. */
export function bytes(value) {
  return encoder.encode(value);
}

/** The message value parsed as JSON; throws BadMessage when it is absent or not JSON. */
export function json(msg) {
  if (msg.value == null) throw new BadMessage('the value is null (a tombstone), expected JSON');
  try {
    return JSON.parse(decoder.decode(msg.value));
  } catch (e) {
    throw new BadMessage(`the value is not JSON: ${e.message}`);
  }
}

/** The first header called `name` (bytes), or undefined. */
export function header(msg, name) {
  const h = msg.headers.find((h) => h.name === name);
  return h === undefined ? undefined : h.value;
}

/** The first header called `name` as text, or undefined. */
export function headerText(msg, name) {
  const v = header(msg, name);
  return v === undefined ? undefined : decoder.decode(v);
}

function toBytes(v) {
  if (v == null) return undefined;
  // Byte lists from the host are typed arrays, but not always of this realm's Uint8Array.
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (typeof v === 'string') return encoder.encode(v);
  return encoder.encode(JSON.stringify(v));
}

/**
 * One output record. `key`/`value` may be a Uint8Array, a string (UTF-8) or any other value
 * (JSON-encoded); null/undefined means absent. `headers` is an array of {name, value} or an
 * object {name: value}. `topic` defaults to the manifest's output-topic.
 */
export function output({ topic, key, value, headers, partition } = {}) {
  let list = [];
  if (Array.isArray(headers)) list = headers.map((h) => ({ name: h.name, value: toBytes(h.value) ?? new Uint8Array() }));
  else if (headers) list = Object.entries(headers).map(([name, v]) => ({ name, value: toBytes(v) ?? new Uint8Array() }));
  return {
    topic: topic ?? undefined,
    key: toBytes(key),
    value: toBytes(value),
    headers: list,
    partition: partition ?? undefined,
  };
}

/** Wraps your `handle` (and optional `init`) into the export kp calls. */
export function defineHandler({ init, handle }) {
  return {
    init() {
      if (init) {
        try {
          init();
        } catch (e) {
          throw `${e && e.message ? e.message : e}`;
        }
      }
    },
    handle(msg) {
      let result;
      try {
        result = handle(msg);
      } catch (e) {
        if (e instanceof BadMessage) throw { tag: 'bad-message', val: e.message };
        if (e instanceof RetryLater) throw { tag: 'retry-later', val: e.message };
        // A bug: the instance traps and the message counts as failed. Its account goes to
        // stderr first, where kp keeps the last lines of a call for the failure's message.
        const what = e instanceof Error ? `${e.name}: ${e.message}` : `uncaught ${typeof e}: ${String(e)}`;
        console.error(`${what}${e && e.stack ? `\n${e.stack}` : ''}`);
        throw e;
      }
      if (result == null) return [];
      return Array.isArray(result) ? result : [result];
    },
  };
}

const level = (name) => (...parts) => hostLog(name, parts.map(String).join(' '));
/** Lines in the host's log, tagged with the plugin's name and version. */
export const log = { trace: level('trace'), debug: level('debug'), info: level('info'), warn: level('warn'), error: level('error') };

/** The plugin's [config] table from its manifest. */
export const config = {
  get: (key) => configGet(key) ?? undefined,
  entries: () => configEntries(),
};
