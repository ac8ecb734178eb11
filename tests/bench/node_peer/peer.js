// The Node.js peer of the benchmark (tests/bench/README.md, "Peer rows"):
// a ComfyUI-to-MQTT bridge as a Node-RED user would write it, with ws and
// mqtt.js from npm and no tuning. One publish per WebSocket frame, to the
// topics comfy2mqtt uses: <p>/<i>/prompt/<id>/event/<type> for prompt
// events, <p>/<i>/event/<type> otherwise; QoS 1 for the lifecycle types,
// QoS 0 for the rest. Payload: a small envelope around ComfyUI's data.
//
//   node peer.js ws://host:port/ws?clientId=ID mqtt://host:port PREFIX INSTANCE
'use strict';
const WebSocket = require('ws');
const mqtt = require('mqtt');

const [wsUrl, mqttUrl, prefix = 'comfyui', instance = 'default'] =
  process.argv.slice(2);
const LIFECYCLE = new Set(['queued', 'execution_start', 'execution_success',
  'execution_error', 'execution_interrupted']);
const clean = (s) => String(s).replace(/[^A-Za-z0-9._:-]/g, '_') || '_';
const base = `${prefix}/${clean(instance)}`;
let seq = 0;

const client = mqtt.connect(mqttUrl, { clientId: `node-peer-${process.pid}` });
client.on('error', (e) => console.error(`node peer: mqtt: ${e.message}`));
client.once('connect', () => {
  const ws = new WebSocket(wsUrl);
  ws.on('message', (buf, isBinary) => {
    if (isBinary) return; // previews are not relayed
    let msg;
    try { msg = JSON.parse(buf); } catch { return; }
    if (!msg || typeof msg.type !== 'string') return;
    const data = msg.data || {};
    const id = typeof data.prompt_id === 'string' ? data.prompt_id : null;
    const topic = id ? `${base}/prompt/${clean(id)}/event/${clean(msg.type)}`
      : `${base}/event/${clean(msg.type)}`;
    const payload = JSON.stringify({ v: 1, type: msg.type, instance,
      prompt_id: id, node: data.node ?? null, ts: Date.now(), seq: ++seq,
      data });
    client.publish(topic, payload, { qos: LIFECYCLE.has(msg.type) ? 1 : 0 });
  });
  ws.on('error', (e) => { console.error(`node peer: ws: ${e.message}`); process.exit(1); });
  ws.on('close', () => client.end(false, () => process.exit(0)));
});
process.on('SIGTERM', () => client.end(false, () => process.exit(0)));
