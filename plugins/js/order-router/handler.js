// order-router (JavaScript): validates JSON orders, adds their total, and routes each to the
// topic of its region.
//
//   in:  {"id": "o-1", "country": "DE", "items": [{"sku": "a", "qty": 2, "price": 9.5}]}
//   out: the order plus "total" and "region", keyed by the order id, on topic
//        `${topic-prefix}${region}` (region from [config] regions; unknown countries -> "other").
//        Orders at or above [config] large-order go to `${topic-prefix}large` as well.
// A value that is not an order is refused as a bad message (the on-failure policy applies).
import { defineHandler, json, output, BadMessage, config, log } from '../../../guest-sdk/js/kp.js';

let regions = new Map();
let prefix = 'orders-';
let largeOrder = Infinity;

function init() {
  // "DE=eu,FR=eu,US=us": country code -> region.
  regions = new Map(
    (config.get('regions') ?? '')
      .split(',')
      .map((pair) => pair.trim().split('='))
      .filter((kv) => kv.length === 2 && kv[0] && kv[1])
      .map(([country, region]) => [country.trim().toUpperCase(), region.trim()]),
  );
  prefix = config.get('topic-prefix') ?? prefix;
  const large = config.get('large-order');
  if (large !== undefined) {
    largeOrder = Number(large);
    if (!Number.isFinite(largeOrder)) throw new Error(`[config] large-order is not a number: ${large}`);
  }
  log.info(`routing ${regions.size} countries to topics ${prefix}*`);
}

function handle(msg) {
  const order = json(msg);
  if (typeof order !== 'object' || order === null || Array.isArray(order)) throw new BadMessage('an order is a JSON object');
  if (typeof order.id !== 'string' || order.id === '') throw new BadMessage('the order has no "id"');
  if (!Array.isArray(order.items) || order.items.length === 0) throw new BadMessage(`order ${order.id} has no items`);
  let cents = 0;
  for (const item of order.items) {
    if (!Number.isFinite(item.qty) || !Number.isFinite(item.price) || item.qty <= 0 || item.price < 0) {
      throw new BadMessage(`order ${order.id}: item ${JSON.stringify(item.sku)} needs a positive qty and a price`);
    }
    cents += Math.round(item.qty * item.price * 100);
  }
  const region = regions.get(String(order.country ?? '').toUpperCase()) ?? 'other';
  const enriched = { ...order, total: cents / 100, region };
  const headers = [...msg.headers, { name: 'routed-by', value: 'order-router.js' }];
  const outputs = [output({ topic: prefix + region, key: order.id, value: enriched, headers })];
  if (enriched.total >= largeOrder) outputs.push(output({ topic: prefix + 'large', key: order.id, value: enriched, headers }));
  return outputs;
}

export const handler = defineHandler({ init, handle });
