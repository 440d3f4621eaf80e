#!/usr/bin/env node
// What a socket.io-client user of a host app notices once prroom is added to it: the host's
// own events on "/" and "/custom" (send(), binary, acks), the order of `connect` and what
// the host's connect handler emits, an unknown namespace's error, and prroom refusing a
// binary payload.  Run against tests/integration/guest_app.py:
//
//   node tests/node/guest_client.js <server-url> <websocket|polling>
//
// Prints ONE JSON line on stdout with what was observed (the Python test asserts on it);
// exit 0 when it ran to the end, 2 on a timeout or crash.
'use strict';

const { io } = require('socket.io-client');

const STEP_TIMEOUT_MS = 5000;
const [url, transport] = process.argv.slice(2);
const results = { transport, error: null };

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), STEP_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function open(namespace) {
  // the order in which `connect` and the host's "auth" event reach the application
  const order = [];
  const socket = io(url + namespace, { transports: [transport], reconnection: false,
                                       auth: { token: 'abc' } });
  socket.on('auth', () => order.push('auth'));
  const connected = new Promise((resolve, reject) => {
    socket.on('connect', () => { order.push('connect'); resolve(); });
    socket.on('connect_error', (err) => reject(err));
  });
  return { socket, order, connected };
}

function next(socket, event) {
  return withTimeout(new Promise((resolve) => socket.once(event, (...args) => resolve(args))),
                     event);
}

function plain(value) {  // JSON-friendly: Buffers as arrays of bytes
  return JSON.parse(JSON.stringify(value, (key, item) => (
    item && item.type === 'Buffer' ? { buffer: item.data } : item)));
}

async function hostEvents(namespace) {
  const { socket, order, connected } = open(namespace);
  await withTimeout(connected, `connect to ${namespace}`);
  const seen = { order };
  const back = next(socket, 'message-back');
  socket.send('hello');
  seen.send = plain(await back);
  const binaryBack = next(socket, 'message-back');
  socket.emit('message', Buffer.from([1, 2, 3]), { nested: Buffer.from([4]) });
  seen.binary = plain(await binaryBack);
  seen.ack = plain(await withTimeout(new Promise((resolve) => socket.emit(
    'message-with-ack', 1, '2', Buffer.from([5]), (...args) => resolve(args))), 'ack'));
  seen.order = order.slice();  // "auth" arrived by now in any case
  socket.close();
  return seen;
}

async function main() {
  results.root = await hostEvents('/');
  results.custom = await hostEvents('/custom');

  const { socket, connected } = open('/');
  await withTimeout(connected, 'connect for prroom');
  results.binaryJoin = await withTimeout(socket.emitWithAck(
    'join-pr-room', { pullRequestId: 1, username: Buffer.from('x') }), 'binary join ack');
  results.join = await withTimeout(socket.emitWithAck(
    'join-pr-room', { pullRequestId: 1, username: 'guest' }), 'join ack');
  socket.close();

  const unknown = open('/random');
  try {
    await withTimeout(unknown.connected, 'connect_error of /random');
    results.unknownNamespace = 'connected';
  } catch (err) {
    results.unknownNamespace = { message: err.message, data: err.data === undefined ? null : err.data };
  }
  unknown.socket.close();
}

main().then(() => {
  process.stdout.write(JSON.stringify(results) + '\n');
  process.exit(0);
}).catch((err) => {
  results.error = String(err && err.stack || err);
  process.stdout.write(JSON.stringify(results) + '\n');
  process.exit(2);
});
