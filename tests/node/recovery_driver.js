// Drives npm socket.io-client sockets for tests/support/node.py's NodeDriver: commands
// arrive on stdin as JSON lines, everything the sockets see leaves on stdout as JSON lines.
'use strict';
const readline = require('readline');
const { io } = require('socket.io-client');

const sockets = {};
const snapshots = {};
const auths = {}; // name -> the auth its next CONNECT sends (set_auth changes it)
const out = (record) => process.stdout.write(JSON.stringify(record) + '\n');

// noticeWithin (ms): this client gives up on a silent connection that long after the
// server's ping interval, instead of after the server's ping timeout, so that it notices a
// silent loss well before the server does (the server's own timeout is left as it is).
// defaultTransports: the client's own (long-polling, then the upgrade to WebSocket) instead
// of WebSocket only; each upgrade is reported.
function open(name, url, { noticeWithin, defaultTransports, ...options } = {}) {
  const socket = io(url, {
    ...(defaultTransports ? {} : { transports: ['websocket'] }), forceNew: true,
    reconnectionDelay: 100, reconnectionDelayMax: 200, ...options,
  });
  if (noticeWithin) {
    socket.io.on('open', () => { socket.io.engine._pingTimeout = noticeWithin; });
  }
  socket.io.on('open', () => {
    out({ ev: 'open', name, transport: socket.io.engine.transport.name });
    socket.io.engine.on('upgrade', (transport) => out({ ev: 'upgrade', name, transport: transport.name }));
  });
  socket.on('connect', () => out({
    ev: 'connect', name, recovered: Boolean(socket.recovered), has_pid: Boolean(socket._pid),
  }));
  socket.on('disconnect', (reason) => out({ ev: 'disconnect', name, reason }));
  socket.on('connect_error', (err) => out({ ev: 'connect_error', name, message: err.message }));
  socket.onAny((event, ...args) => out({ ev: 'event', name, event, args }));
  sockets[name] = socket;
  return socket;
}

const commands = {
  connect({ name, url, options, auth }) {
    if (auth) auths[name] = auth;
    open(name, url, auth ? { ...options, auth: (cb) => cb(auths[name]) } : options || {});
  },
  set_auth({ name, auth }) { auths[name] = auth; },
  // what a socket would present in its next CONNECT, kept for a thief to replay later
  snapshot({ name }) {
    snapshots[name] = { pid: sockets[name]._pid, offset: sockets[name]._lastOffset };
    out({ ev: 'snapshot', name, has_pid: Boolean(snapshots[name].pid) });
  },
  // auth: the thief's own credentials (a token), sent along with the victim's pid/offset
  steal({ name, victim, url, auth }) {
    open(name, url, { auth: { ...auth, ...snapshots[victim] }, reconnection: false });
  },
  emit({ name, event, payload, ack, seq }) {
    const socket = sockets[name];
    // with the `retries` option, socket.io-client calls an ack with (error, reply)
    const retried = Boolean(socket._opts.retries);
    if (ack && retried) {
      socket.emit(event, payload, (error, reply) => out({
        ev: 'ack', name, seq, reply, error: error ? String(error) : null,
      }));
    } else if (ack) socket.emit(event, payload, (reply) => out({ ev: 'ack', name, seq, reply }));
    else socket.emit(event, payload);
  },
  close({ name }) { sockets[name].disconnect(); },
  exit() { for (const s of Object.values(sockets)) s.disconnect(); process.exit(0); },
};

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const command = JSON.parse(line);
  try {
    commands[command.cmd](command);
  } catch (err) {
    out({ ev: 'error', message: String(err) });
  }
});
process.stdin.on('end', () => process.exit(0));
