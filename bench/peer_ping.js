'use strict';
// Preloaded into the Node peer server (`node -r bench/peer_ping.js server.js`) for the idle
// scenario only: it gives the peer the same short Engine.IO ping interval and timeout that
// prroom gets from PRROOM_PING_INTERVAL / PRROOM_PING_TIMEOUT, so both are watched through two
// ping rounds in the same time. The peer's code is not changed; its `new Server(...)` gets
// these two options added.
const interval = Number(process.env.BENCH_PING_INTERVAL_MS);
const timeout = Number(process.env.BENCH_PING_TIMEOUT_MS);
if (interval > 0 && timeout > 0) {
  const socketio = require(require.resolve('socket.io', { paths: [process.cwd()] }));
  const Base = socketio.Server;
  class Server extends Base {
    constructor(server, options) {
      super(server, { ...options, pingInterval: interval, pingTimeout: timeout });
    }
  }
  socketio.Server = Server;
}
