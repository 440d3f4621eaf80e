'use strict';
// Load generator for bench/run.py: npm socket.io-client (what browsers run) over WebSocket.
//
//   node loadgen.js '<json config>'
//
// It speaks JSON lines with its parent: on stdout it prints {"event": "barrier", "name", ...}
// and waits for one line on stdin before going on (so the parent can sample the server's CPU
// and memory at the same moments, and keep several load generator processes in step), and
// finally {"event": "result", ...}. Traffic keeps flowing while it waits at a barrier.
// Run by hand with "barriers": false in the config to skip the waiting.
//
// Scenarios (config.scenario):
//   rooms   connect `sockets` sockets, each joining a room of `roomSize` (acked), then every
//           socket sends with one acked message in flight for `duration` seconds (after
//           `warmup`); counts pr-room-message deliveries received by all sockets.
//   fanout  `members` sockets in one room; one of them sends `messages` messages
//           `intervalMs` apart, each carrying its send time; latency = receive − send time,
//           over every delivery (same process, same monotonic clock); with `ack`, each
//           send asks for an ack (as the chat page's do).  Per message it also notes when
//           its first and last copies came in: the first copy's latency is the server's
//           (and the wire's) share; the spread after it is mostly this process reading
//           the other copies one after another.  With several `urls`, each server gets a
//           room of `members` and `messages` messages, in blocks of `block` (default 100),
//           the servers in turn, back and forth (`byServer`).
//   idle    connect `sockets` sockets into rooms of `roomSize` and hold them until told to
//           stop; counts disconnects and the Engine.IO pings each socket answered.
//
// Several servers (a cluster): `urls` instead of `url`. Room r (counted from `roomOffset`,
// so that several load generator processes spread one set of rooms) lives on server
// r % urls.length; with `spread: "span"` the second half of each room's members talk to the
// next server, so every room spans two. The rooms scenario then also reports, per server,
// the deliveries its sockets received and the messages acked through it (`byServer`).
const { monitorEventLoopDelay, performance } = require('perf_hooks');
const readline = require('readline');

const config = JSON.parse(process.argv[2] || '{}');
// `"client": "wire"`: wire.js's minimal client over npm ws instead of socket.io-client
// (the same frames on the wire, less of the load generator's CPU per delivery)
const { io } = config.client === 'wire' ? require('./wire') : require('socket.io-client');
const LAG_RESOLUTION_MS = 10;
const MESSAGE_EVENT = 'pr-room-message';
const urls = config.urls || [config.url];

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// ---- barriers -------------------------------------------------------------------------
const waiting = [];
if (config.barriers !== false) {
  readline.createInterface({ input: process.stdin }).on('line', () => {
    const next = waiting.shift();
    if (next) next();
  });
}
function barrier(name, data = {}) {
  out({ event: 'barrier', name, ...data });
  if (config.barriers === false) return Promise.resolve();
  return new Promise((resolve) => waiting.push(resolve));
}

// ---- our own cost: CPU% and event-loop lag over a phase --------------------------------
function startPhase() {
  const lag = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  lag.enable();
  return { cpu: process.cpuUsage(), t: performance.now(), lag };
}
function endPhase(phase) {
  const seconds = (performance.now() - phase.t) / 1000;
  const cpu = process.cpuUsage(phase.cpu);
  phase.lag.disable();
  // The histogram holds the time between timer ticks; the lag is what exceeds the resolution.
  const lagMs = (ns) => Math.max(0, ns / 1e6 - LAG_RESOLUTION_MS);
  const sampled = phase.lag.count > 0;
  return {
    seconds,
    cpuPercent: (100 * (cpu.user + cpu.system)) / 1e6 / seconds,
    lagP50Ms: sampled ? lagMs(phase.lag.percentile(50)) : 0,
    lagP99Ms: sampled ? lagMs(phase.lag.percentile(99)) : 0,
    lagMaxMs: sampled ? lagMs(phase.lag.max) : 0,
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- connecting -----------------------------------------------------------------------
const errors = {};
function countError(kind) {
  errors[kind] = (errors[kind] || 0) + 1;
}

let lastEventAt = performance.now();
let disconnects = 0;
const disconnectReasons = {};

// The server socket `index` of a room scenario talks to (see the top of the file).
function serverOf(index) {
  const room = (config.roomOffset || 0) + Math.floor(index / config.roomSize);
  const second = config.spread === 'span' && index % config.roomSize >= config.roomSize / 2;
  return (room + (second ? 1 : 0)) % urls.length;
}

function connectAndJoin(index, pullRequestId, onMessage, server) {
  return new Promise((resolve) => {
    const username = `bench-${config.tag || 'u'}-${index}`;
    const socket = io(urls[server], {
      transports: ['websocket'],
      forceNew: true, // one Engine.IO connection per socket, like separate browser tabs
      reconnection: false, // a lost socket is counted, not silently replaced
      timeout: 30000,
    });
    socket.benchUser = username;
    socket.benchRoom = pullRequestId;
    socket.benchPings = 0;
    socket.benchServer = server;
    socket.onAny(() => { lastEventAt = performance.now(); }); // presence events included
    if (onMessage) socket.on(MESSAGE_EVENT, (message) => onMessage(message, socket));
    socket.on('pr-room-error', () => countError('pr-room-error'));
    socket.once('connect_error', (err) => {
      countError(`connect_error: ${err.message}`);
      socket.close();
      resolve(null);
    });
    socket.once('connect', () => {
      socket.io.engine.on('ping', () => { socket.benchPings += 1; });
      socket.timeout(30000).emit('join-pr-room', { pullRequestId, username }, (err, ack) => {
        if (err || !ack || !ack.ok) {
          countError(err ? 'join timeout' : `join refused: ${JSON.stringify(ack && ack.error)}`);
          socket.close();
          resolve(null);
          return;
        }
        socket.on('disconnect', (reason) => {
          disconnects += 1;
          disconnectReasons[reason] = (disconnectReasons[reason] || 0) + 1;
        });
        resolve(socket);
      });
    });
  });
}

// Opens `count` sockets with at most `window` connecting at once; socket i joins room
// roomOf(i) on server serverOf(i). Returns the sockets that joined.
async function openAll(count, roomOf, onMessage, serverOfIndex = serverOf) {
  const sockets = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const index = next++;
      const socket = await connectAndJoin(index, roomOf(index), onMessage,
        serverOfIndex(index));
      if (socket) sockets.push(socket);
    }
  };
  await Promise.all(Array.from({ length: Math.min(config.window || 200, count) }, worker));
  return sockets;
}

// Waits until no event at all (presence included) arrived for `quietMs`, at most `maxMs`.
async function settle(quietMs = 300, maxMs = 15000) {
  const started = performance.now();
  while (performance.now() - lastEventAt < quietMs && performance.now() - started < maxMs) {
    await sleep(50);
  }
}

function closeAll(sockets) {
  for (const socket of sockets) socket.disconnect();
}

const roomId = (index) => config.prBase + Math.floor(index / config.roomSize);

// ---- scenarios ------------------------------------------------------------------------
async function rooms() {
  let delivered = 0;
  const deliveredBy = urls.map(() => 0);
  const ackedBy = urls.map(() => 0);
  const onMessage = (message, socket) => {
    delivered += 1;
    deliveredBy[socket.benchServer] += 1;
  };

  await barrier('connect:start');
  const connectPhase = startPhase();
  const sockets = await openAll(config.sockets, roomId, onMessage);
  const connect = endPhase(connectPhase);
  await barrier('connect:end', { joined: sockets.length });
  await settle(); // presence events delivered: the server's memory is at rest
  await barrier('settled');

  // Every member sends with one acked message in flight: the next goes on the ack.
  let sending = true;
  let inFlight = 0;
  let acked = 0;
  let refused = 0;
  const send = (socket) => {
    if (!sending || !socket.connected) return;
    inFlight += 1;
    socket.emit('send-message-to-pr-room',
      { pullRequestId: socket.benchRoom, username: socket.benchUser, message: 'bench' },
      (ack) => {
        inFlight -= 1;
        acked += 1;
        ackedBy[socket.benchServer] += 1;
        if (!ack || !ack.ok) refused += 1;
        send(socket);
      });
  };
  sockets.forEach(send);
  await sleep(config.warmup * 1000);
  const fromDelivered = delivered;
  const fromAcked = acked;
  const fromBy = [deliveredBy.slice(), ackedBy.slice()];
  const sendPhase = startPhase();
  await barrier('throughput:start');
  await sleep(config.duration * 1000 - (performance.now() - sendPhase.t));
  const deliveredInWindow = delivered - fromDelivered;
  const ackedInWindow = acked - fromAcked;
  const byServer = urls.map((url, k) => ({
    url,
    sockets: sockets.filter((s) => s.benchServer === k).length,
    delivered: deliveredBy[k] - fromBy[0][k],
    acked: ackedBy[k] - fromBy[1][k],
  }));
  const throughput = endPhase(sendPhase);
  await barrier('throughput:end');
  sending = false;
  const drainStarted = performance.now();
  while (inFlight > 0 && performance.now() - drainStarted < 5000) await sleep(20);
  closeAll(sockets);
  return {
    sockets: config.sockets,
    joined: sockets.length,
    connectSeconds: connect.seconds,
    socketsPerSecond: sockets.length / connect.seconds,
    connect,
    deliveriesPerSecond: deliveredInWindow / throughput.seconds,
    messagesPerSecond: ackedInWindow / throughput.seconds,
    delivered: deliveredInWindow,
    acked: ackedInWindow,
    refused,
    unackedAtEnd: inFlight,
    throughput,
    byServer,
  };
}

// One server's share of a fan-out: its copies' latencies, and per message when its first
// and last copies came in.
function fanoutState(messages, expected) {
  return {
    expected,
    received: 0,
    extra: 0,
    latencies: new Float64Array(expected),
    firstAt: new Float64Array(messages).fill(NaN), // latency of the first copy
    lastAt: new Float64Array(messages), // receive time of the latest copy
    sentAt: new Float64Array(messages),
  };
}

function fanoutFigures(state, sockets, messages, url) {
  const { received } = state;
  const sorted = state.latencies.subarray(0, received).sort();
  const pct = (p) => (received ? sorted[Math.min(received - 1, Math.floor((p / 100) * received))] : null);
  let sum = 0;
  for (let i = 0; i < received; i += 1) sum += sorted[i];
  const firsts = [];
  const spreads = [];
  for (let i = 0; i < messages; i += 1) {
    if (Number.isNaN(state.firstAt[i])) continue;
    firsts.push(state.firstAt[i]);
    spreads.push(state.lastAt[i] - state.sentAt[i] - state.firstAt[i]);
  }
  const median = (xs) => (xs.length ? xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)] : null);
  return {
    url,
    joined: sockets,
    expected: sockets * messages,
    received,
    extra: state.extra,
    p50Ms: pct(50),
    p90Ms: pct(90),
    p99Ms: pct(99),
    maxMs: received ? sorted[received - 1] : null,
    meanMs: received ? sum / received : null,
    firstP50Ms: median(firsts), // per message, the first copy's latency: median of messages
    spreadP50Ms: median(spreads), // per message, last copy's arrival - first's: median
  };
}

// With several `urls` (side by side), each server gets `members` sockets in a room of its
// own and `messages` messages, in blocks (see below).
async function fanout() {
  const servers = urls.length;
  const states = urls.map(() => fanoutState(config.messages, config.members * config.messages));
  let pending = states.reduce((n, state) => n + state.expected, 0);
  let counting = false;
  let resolveAll;
  const allIn = new Promise((resolve) => { resolveAll = resolve; });
  const onMessage = (message, socket) => {
    if (!counting) return;
    const now = performance.now();
    const state = states[socket.benchServer];
    if (state.received >= state.expected) { state.extra += 1; return; }
    const [seq, sent] = message.message.split(' ');
    const latency = now - Number(sent);
    state.latencies[state.received++] = latency;
    if (Number.isNaN(state.firstAt[seq])) {
      state.firstAt[seq] = latency;
      state.sentAt[seq] = Number(sent);
    }
    state.lastAt[seq] = now;
    pending -= 1;
    if (pending === 0) resolveAll();
  };

  await barrier('connect:start');
  const connectPhase = startPhase();
  // socket i talks to server i % servers (connects to the servers interleave)
  const sockets = await openAll(config.members * servers, (i) => config.prBase + (i % servers),
    onMessage, (i) => i % servers);
  const connect = endPhase(connectPhase);
  await barrier('connect:end', { joined: sockets.length });
  await settle(); // presence events of 500 joins must be delivered before we time anything

  const senders = urls.map((url, k) => sockets.find((s) => s.benchServer === k));
  const joinedBy = urls.map((url, k) => sockets.filter((s) => s.benchServer === k).length);
  if (senders.some((sender) => !sender)) throw new Error('a server had no socket joined');
  const phase = startPhase();
  await barrier('fanout:start');
  counting = true;
  let lateSends = 0;
  const sent = urls.map(() => 0);
  // Messages `intervalMs` apart, in blocks of `block` to one server; with several servers
  // the blocks go to them in turn, back and forth (0 1 1 0 0 1 ...), each block's copies all
  // in before the next block starts, so the servers never overlap and a drift of the
  // machine's speed reaches both alike.
  const block = servers > 1 ? (config.block || 100) : config.messages;
  const order = [];
  for (let cycle = 0; order.length < servers * Math.ceil(config.messages / block); cycle += 1) {
    const turn = urls.map((url, k) => k);
    order.push(...(cycle % 2 ? turn.reverse() : turn));
  }
  for (const k of order) {
    const sender = senders[k];
    const count = Math.min(block, config.messages - sent[k]);
    const started = performance.now();
    for (let j = 0; j < count; j += 1) {
      const due = started + j * config.intervalMs;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait); else if (wait < -config.intervalMs) lateSends += 1;
      // "<seq> <send time>": the time is performance.now() of this process, read just before.
      const payload = {
        pullRequestId: sender.benchRoom, username: sender.benchUser,
        message: `${sent[k]} ${performance.now()}`,
      };
      sent[k] += 1;
      if (config.ack) sender.emit('send-message-to-pr-room', payload, () => {});
      else sender.emit('send-message-to-pr-room', payload);
    }
    if (servers > 1) { // this block's copies in (or the drain's time up), then a breath
      const until = performance.now() + config.drainSeconds * 1000;
      while (states[k].received < joinedBy[k] * sent[k] && performance.now() < until) {
        await sleep(5);
      }
      await sleep(config.blockGapMs ?? 100);
    }
  }
  const expectedNow = urls.reduce((n, url, k) => n + joinedBy[k] * config.messages, 0);
  const receivedNow = () => states.reduce((n, state) => n + state.received, 0);
  if (receivedNow() < expectedNow) {
    await Promise.race([allIn, sleep(config.drainSeconds * 1000)]);
  }
  const fan = endPhase(phase);
  await barrier('fanout:end');
  counting = false;
  closeAll(sockets);

  const byServer = urls.map((url, k) => fanoutFigures(states[k], joinedBy[k], config.messages,
    url));
  return {
    ...byServer[0], // one server: its figures (several: see byServer)
    members: config.members,
    joined: sockets.length,
    messages: config.messages,
    expected: expectedNow,
    received: receivedNow(),
    extra: states.reduce((n, state) => n + state.extra, 0),
    lateSends,
    connect,
    fanout: fan,
    byServer,
  };
}

async function idle() {
  await barrier('connect:start');
  const connectPhase = startPhase();
  const sockets = await openAll(config.sockets, roomId, null);
  const connect = endPhase(connectPhase);
  const engine = sockets.length ? sockets[0].io.engine : null;
  await settle();
  const holdPhase = startPhase();
  await barrier('connect:end', {
    joined: sockets.length,
    // from the server's Engine.IO handshake (engine.io-client 6.6 keeps them private)
    pingIntervalMs: engine ? engine._pingInterval ?? engine.pingInterval : null,
    pingTimeoutMs: engine ? engine._pingTimeout ?? engine.pingTimeout : null,
  });
  // The parent holds us at this barrier for two ping intervals and more.
  await barrier('hold:end');
  const hold = endPhase(holdPhase);
  const stillConnected = sockets.filter((s) => s.connected).length;
  let minPings = Infinity;
  for (const s of sockets) minPings = Math.min(minPings, s.benchPings);
  const byServer = urls.map((url, k) => {
    const mine = sockets.filter((s) => s.benchServer === k);
    return { url, joined: mine.length, stillConnected: mine.filter((s) => s.connected).length };
  });
  const lost = { disconnects, disconnectReasons: { ...disconnectReasons } }; // before we close
  closeAll(sockets);
  return {
    sockets: config.sockets,
    joined: sockets.length,
    stillConnected,
    ...lost,
    minPingsPerSocket: sockets.length ? minPings : null,
    byServer,
    connect,
    hold,
  };
}

const scenarios = { rooms, fanout, idle };

async function main() {
  const run = scenarios[config.scenario];
  if (!run) throw new Error(`unknown scenario ${config.scenario}`);
  const result = await run();
  out({ event: 'result', scenario: config.scenario, errors, ...result });
  await sleep(200); // let the close frames go out
  process.exit(0);
}

main().catch((err) => {
  out({ event: 'error', message: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});
