'use strict';
// Connects and joins for bench/connect_cost.py: npm socket.io-client over WebSocket.
//
//   node connects.js '{"url": "http://127.0.0.1:8000", "sockets": 400, "roomSize": 10}'
//
// Opens `sockets` sockets, `window` at a time, each joining room i / roomSize (acked), as
// bench/run.py's rooms scenario connects, and prints one JSON line: {"joined": N,
// "errors": {...}}. With `hold`, it then waits for a line on stdin (the parent counts what
// the server did so far). Then it closes them all, waits for the server to have seen them
// go (`settleMs`) and prints {"closed": N}. It exits non-zero if a socket failed to join.
const { io } = require('socket.io-client');

const config = { window: 20, roomSize: 10, settleMs: 500, ...JSON.parse(process.argv[2] || '{}') };
const errors = {};

function connectAndJoin(index) {
  return new Promise((resolve) => {
    const socket = io(config.url, { transports: ['websocket'], forceNew: true,
                                   reconnection: false, timeout: 120000 });
    const fail = (why) => { errors[why] = (errors[why] || 0) + 1; socket.close(); resolve(null); };
    socket.once('connect_error', (err) => fail(`connect_error: ${err.message}`));
    socket.once('connect', () => {
      const pullRequestId = 1 + Math.floor(index / config.roomSize);
      socket.timeout(120000).emit('join-pr-room', { pullRequestId, username: `c-${index}` },
        (err, ack) => (err || !ack || !ack.ok ? fail(err ? 'join timeout' : 'join refused')
                                              : resolve(socket)));
    });
  });
}

async function main() {
  const sockets = [];
  let next = 0;
  async function worker() {
    while (next < config.sockets) {
      const socket = await connectAndJoin(next++);
      if (socket) sockets.push(socket);
    }
  }
  await Promise.all(Array.from({ length: config.window }, worker));
  process.stdout.write(`${JSON.stringify({ joined: sockets.length, errors })}\n`);
  if (sockets.length !== config.sockets) process.exit(1);
  if (config.hold) {
    await new Promise((resolve) => process.stdin.once('data', resolve));
  }
  for (const socket of sockets) socket.disconnect();
  await new Promise((resolve) => setTimeout(resolve, config.settleMs));
  process.stdout.write(`${JSON.stringify({ closed: sockets.length })}\n`);
  process.exit(0);
}

main();
