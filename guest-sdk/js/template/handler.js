// The {{name}} kp handler: copies each message to the output topic with a `handled-by` header.
// Replace `handle` with your logic; sdk/kp.js lists the helpers.
import { defineHandler, output, BadMessage } from './sdk/kp.js';

function handle(msg) {
  if (msg.value == null) throw new BadMessage('{{name}} does not handle tombstones');
  const headers = [...msg.headers, { name: 'handled-by', value: '{{name}}' }];
  return [output({ key: msg.key, value: msg.value, headers })];
}

export const handler = defineHandler({ handle });
