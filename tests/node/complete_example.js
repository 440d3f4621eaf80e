#!/usr/bin/env node
// The product doc's "Complete Example" (send-message-to-pr-room), run with the npm
// socket.io-client against a real prroom server, exactly as the doc writes it:
// io(url, {transports: ['websocket']}), join-pr-room in the 'connect' handler, and
// fire-and-forget emits (no ack) for joining, sending and typing.
//
//   node tests/node/complete_example.js <server-url> <pullRequestId> [otherPullRequestId]
//
// Prints ONE JSON line on stdout: {ok, checks: {name: {ok, required, ...details}}, failures,
// error, step, ...}.  Exit 0 when every required check passed, 1 when a check failed,
// 2 on a timeout or crash, 64 on bad arguments.  Nothing here sleeps: every "X did not
// receive Y" is proven by ordering (the server answers one connection's events in order, so
// a later event that comes back first proves nothing earlier was on its way).
'use strict';

const PRESENCE_EVENTS = ['pr-room-members', 'pr-room-user-joined', 'pr-room-user-left'];
const HARD_TIMEOUT_MS = 15000;  // the whole run, whatever happens
const STEP_TIMEOUT_MS = 5000;   // one awaited event

let io;
try {
  ({ io } = require('socket.io-client'));
} catch (err) {
  process.stderr.write('socket.io-client is not installed: run `npm ci --prefix tests/node` '
                       + `(${err.message})\n`);
  process.exit(2);
}

const ROOM_OFFSET = 2 ** 40;  // other rooms: far above any id the test suite hands out

const results = {
  ok: false,
  url: null,
  pullRequestId: null,
  otherPullRequestId: null,
  docExamplePullRequestId: null,
  clientVersion: require('socket.io-client/package.json').version,
  checks: {},
  failures: [],
  error: null,
  step: 'start',
};
const sockets = [];
let finished = false;

function finish(code, error) {
  if (finished) return;
  finished = true;
  clearTimeout(hardTimer);
  if (error) {
    results.error = error;
    process.stderr.write(`complete_example.js FAILED at step "${results.step}": ${error}\n`);
  }
  results.failures = Object.entries(results.checks)
    .filter(([, check]) => check.required && !check.ok)
    .map(([name, check]) => `${name}: ${check.why}`);
  results.ok = code === 0 && results.failures.length === 0;
  if (code === 0 && !results.ok) {
    code = 1;
    process.stderr.write(`complete_example.js: ${results.failures.length} check(s) failed:\n  `
                         + results.failures.join('\n  ') + '\n');
  }
  for (const socket of sockets) socket.close();
  process.stdout.write(JSON.stringify(results) + '\n', () => process.exit(code));
}

const hardTimer = setTimeout(
  () => finish(2, `hard timeout: the run did not finish within ${HARD_TIMEOUT_MS} ms`),
  HARD_TIMEOUT_MS);

process.on('uncaughtException', (err) => finish(2, `uncaught exception: ${err.stack || err}`));
process.on('unhandledRejection', (err) => finish(2, `unhandled rejection: ${err && err.stack || err}`));

function step(name) {
  results.step = name;
}

function check(name, ok, why, details = {}, required = true) {
  results.checks[name] = { ok: Boolean(ok), required, why: ok ? null : why, ...details };
}

function brief(entry) {
  return entry && { event: entry.event, data: entry.data };
}

// One user of the doc's example: a socket set up exactly like the Complete Example, plus an
// ordered log of every event the server sent it (onAny) so checks can look at order.
class User {
  constructor(username, pullRequestId, options) {
    this.username = username;
    this.pullRequestId = pullRequestId;
    this.events = [];        // [{event, data}] in arrival order
    this.displayed = [];     // what the doc's displayMessage(username, message) would show
    this.waiters = [];
    this.connectError = null;
    this.handshakeTransport = null;  // transport of the Engine.IO handshake
    this.upgradedTo = null;

    // -- the product doc's code --
    const socket = options === undefined ? io(results.url) : io(results.url, options);
    socket.on('connect', () => {
      // Join the room first
      socket.emit('join-pr-room', { pullRequestId, username });
    });
    socket.on('pr-room-message', (data) => {
      this.displayed.push(`${data.username}: ${data.message}`);
    });
    // -- end of the doc's code --

    this.socket = socket;
    sockets.push(socket);
    socket.io.engine.once('open', () => { this.handshakeTransport = socket.io.engine.transport.name; });
    socket.io.engine.on('upgrade', (transport) => { this.upgradedTo = transport.name; });
    socket.on('connect_error', (err) => { this.connectError = String(err && err.message || err); });
    // Presence events (who is in the room) are kept apart: the checks below are about
    // the doc's message flow and assert on the exact order of what remains.
    this.presence = [];
    socket.onAny((event, ...args) => {
      if (PRESENCE_EVENTS.includes(event)) {
        this.presence.push({ event, data: args[0] });
        return;
      }
      this.events.push({ event, data: args[0] });
      this._wake();
    });
  }

  // The doc's sendMessage(text), fire and forget.
  sendMessage(text) {
    this.socket.emit('send-message-to-pr-room', {
      pullRequestId: this.pullRequestId,
      username: this.username,
      message: text,
    });
  }

  connected() {
    if (this.socket.connected) return Promise.resolve();
    return this._until(`${this.username} connects`, () => this.socket.connected || undefined);
  }

  // The first event at or after `from` matching `predicate`: resolves {index, event, data}.
  waitFor(description, predicate, from = 0) {
    return this._until(`${this.username} receives ${description}`, () => {
      for (let i = from; i < this.events.length; i += 1) {
        if (predicate(this.events[i])) return { index: i, ...this.events[i] };
      }
      return undefined;
    });
  }

  waitForMessage(username, message, from = 0) {
    return this.waitFor(`pr-room-message ${JSON.stringify(`${username}: ${message}`)}`,
                        (e) => e.event === 'pr-room-message' && e.data
                               && e.data.username === username && e.data.message === message,
                        from);
  }

  // Emit with an ack callback, as `socket.emit(event, data, (ack) => ...)`.
  emitWithCallback(event, data) {
    return withTimeout(`${this.username} gets the ack of ${event}`,
                       new Promise((resolve) => this.socket.emit(event, data, (ack) => resolve(ack))));
  }

  upgraded() {
    if (this.socket.io.engine.transport.name === 'websocket') return Promise.resolve();
    return this._until(`${this.username}'s transport upgrades to websocket`,
                       () => (this.socket.io.engine.transport.name === 'websocket' || undefined));
  }

  _until(description, probe) {
    const found = probe();
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = { probe, resolve };
      waiter.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out after ${STEP_TIMEOUT_MS} ms waiting until ${description}; `
                         + `connected=${this.socket.connected} connectError=${this.connectError} `
                         + `events so far: ${JSON.stringify(this.events)}`));
      }, STEP_TIMEOUT_MS);
      this.waiters.push(waiter);
    });
  }

  _wake() {
    for (const waiter of [...this.waiters]) {
      const found = waiter.probe();
      if (found !== undefined) {
        clearTimeout(waiter.timer);
        this.waiters = this.waiters.filter((w) => w !== waiter);
        waiter.resolve(found);
      }
    }
  }
}

function withTimeout(description, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${STEP_TIMEOUT_MS} ms waiting `
                                              + `until ${description}`)), STEP_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function isMessage(entry, pullRequestId, username, message) {
  return entry && entry.event === 'pr-room-message' && entry.data
    && entry.data.pullRequestId === pullRequestId && entry.data.username === username
    && entry.data.message === message;
}

function hasMessageShape(data, pullRequestId, username, message) {
  return data && data.pullRequestId === pullRequestId && data.username === username
    && data.message === message && typeof data.id === 'string' && data.id.length > 0
    && Number.isInteger(data.sentAt);
}

function newUser(username, pullRequestId, options) {
  const user = new User(username, pullRequestId, options);
  // wake waiters on connection / upgrade too (they are not in the event log)
  user.socket.on('connect', () => user._wake());
  user.socket.io.engine.on('upgrade', () => user._wake());
  return user;
}

async function main() {
  const [url, prArg, otherArg] = process.argv.slice(2);
  const usage = 'usage: node complete_example.js <server-url> <pullRequestId> [otherPullRequestId]';
  const pullRequestId = Number(prArg);
  if (!url || !Number.isSafeInteger(pullRequestId) || pullRequestId <= 0
      || pullRequestId + 2 * ROOM_OFFSET > Number.MAX_SAFE_INTEGER) {
    process.stderr.write(`${usage}\n`);
    process.exit(64);
  }
  const otherId = otherArg === undefined ? pullRequestId + ROOM_OFFSET : Number(otherArg);
  const docExampleId = pullRequestId + 2 * ROOM_OFFSET;
  results.url = url;
  results.pullRequestId = pullRequestId;
  results.otherPullRequestId = otherId;
  results.docExamplePullRequestId = docExampleId;
  const WS = { transports: ['websocket'] };

  // --- the second reviewer is in the room first ---------------------------------------
  step('janedoe connects over websocket, joins on connect and sees her own first message');
  const jane = newUser('janedoe', pullRequestId, WS);
  await jane.connected();
  jane.sendMessage('Reviewing this now.');
  await jane.waitForMessage('janedoe', 'Reviewing this now.');

  step('carol connects over websocket to ANOTHER pull request room and sees her own message');
  const carol = newUser('carol', otherId, WS);
  await carol.connected();
  carol.sendMessage('Working on the other pull request.');
  const carolHello = await carol.waitForMessage('carol', 'Working on the other pull request.');

  // --- the Complete Example: johndoe joins on connect and sends --------------------------
  step('johndoe (the doc\'s user) connects, joins on connect and sends the doc\'s message');
  const john = newUser('johndoe', pullRequestId, WS);
  await john.connected();
  const approved = 'This looks great! Approved.';
  john.sendMessage(approved);
  const johnGot = await john.waitForMessage('johndoe', approved);
  const janeGot = await jane.waitForMessage('johndoe', approved);
  check('roomMessageToBoth',
        hasMessageShape(johnGot.data, pullRequestId, 'johndoe', approved)
        && hasMessageShape(janeGot.data, pullRequestId, 'johndoe', approved)
        && johnGot.data.id === janeGot.data.id,
        'pr-room-message lacks the doc\'s fields (username, message) plus pullRequestId, id, '
        + 'sentAt, or the two members got different messages',
        { sender: johnGot.data, reviewer: janeGot.data });
  check('docListenerOutput',
        john.displayed.includes(`johndoe: ${approved}`)
        && jane.displayed.includes(`johndoe: ${approved}`),
        'the doc\'s listener did not print "johndoe: This looks great! Approved." for both',
        { sender: john.displayed, reviewer: jane.displayed });
  const rosterOf = (user) => user.presence.filter(
    (e) => e.event === 'pr-room-members' && e.data.pullRequestId === pullRequestId);
  check('joinersGetTheRoster',
        rosterOf(john).length === 1 && rosterOf(john)[0].data.members.includes('johndoe')
        && rosterOf(jane).length === 1 && rosterOf(jane)[0].data.members.includes('janedoe'),
        'each joiner should get one pr-room-members listing itself',
        { johndoe: rosterOf(john), janedoe: rosterOf(jane) });
  check('noHistoryReplayed', johnGot.index === 0,
        'johndoe received something before his own message (the server keeps no history)',
        { johnFirstEvent: brief(john.events[0]) });

  // --- typing indicators ------------------------------------------------------------
  step('janedoe types and stops typing; johndoe sees it, janedoe does not');
  const janeMark = jane.events.length;
  const johnMark = john.events.length;
  jane.socket.emit('typing', { pullRequestId, username: 'janedoe' });
  const typing = await john.waitFor('typing from janedoe',
                                    (e) => e.event === 'typing', johnMark);
  jane.socket.emit('stop-typing', { pullRequestId, username: 'janedoe' });
  const stopTyping = await john.waitFor('stop-typing from janedoe',
                                        (e) => e.event === 'stop-typing', typing.index + 1);
  const doneTyping = 'Left two comments.';
  jane.sendMessage(doneTyping);
  const janeOwn = await jane.waitForMessage('janedoe', doneTyping, janeMark);
  const johnSees = await john.waitForMessage('janedoe', doneTyping, johnMark);
  const expected = { pullRequestId, username: 'janedoe' };
  check('typingReachesOthers',
        typing.index === johnMark && JSON.stringify(typing.data) === JSON.stringify(expected)
        && stopTyping.index === johnMark + 1
        && JSON.stringify(stopTyping.data) === JSON.stringify(expected)
        && johnSees.index === johnMark + 2,
        'johndoe did not get exactly typing, stop-typing, message from janedoe in that order',
        { johndoeEvents: john.events.slice(johnMark) });
  check('typingNotEchoedToSender', janeOwn.index === janeMark,
        'janedoe received something (her own typing echoed?) before her next message',
        { janedoeEvents: jane.events.slice(janeMark) });

  // --- the other room hears nothing -----------------------------------------------------
  step('carol sends in her own room: the first thing she receives is her own message');
  const carolMark = carol.events.length;
  const carolText = 'Anyone reviewing the other pull request?';
  carol.sendMessage(carolText);
  const carolOwn = await carol.waitForMessage('carol', carolText, carolMark);
  check('otherRoomHearsNothing',
        carolHello.index === 0 && carolMark === 1 && carolOwn.index === carolMark
        && isMessage(carolOwn, otherId, 'carol', carolText),
        `the socket in pull request ${otherId}'s room received events from room ${pullRequestId}`,
        { carolEvents: carol.events });

  // --- a non-member send, fire and forget ------------------------------------------------
  step('carol sends to johndoe\'s room without joining it (no ack): pr-room-error');
  const carolMark2 = carol.events.length;
  carol.socket.emit('send-message-to-pr-room',
                    { pullRequestId, username: 'carol', message: 'Let me in.' });
  const refused = await carol.waitFor('pr-room-error', (e) => e.event === 'pr-room-error',
                                      carolMark2);
  const err = refused.data || {};
  check('nonMemberGetsError',
        refused.index === carolMark2 && err.ok === false
        && err.event === 'send-message-to-pr-room' && err.error
        && err.error.code === 'not-a-member' && typeof err.error.message === 'string'
        && err.pullRequestId === pullRequestId,
        'a non-member\'s send did not yield pr-room-error {ok:false, event, '
        + 'error:{code:"not-a-member"}, pullRequestId}',
        { error: refused.data });

  // --- acks, when a callback is given ---------------------------------------------------
  step('johndoe sends with an ack callback');
  const janeMark3 = jane.events.length;
  const ackText = 'Merging after CI.';
  const joinAck = await john.emitWithCallback('join-pr-room', { pullRequestId, username: 'johndoe' });
  const sendAck = await john.emitWithCallback('send-message-to-pr-room',
                                              { pullRequestId, username: 'johndoe', message: ackText });
  const janeAckMsg = await jane.waitForMessage('johndoe', ackText, janeMark3);
  check('ackOnSuccess',
        joinAck && joinAck.ok === true && joinAck.pullRequestId === pullRequestId
        && sendAck && sendAck.ok === true && sendAck.pullRequestId === pullRequestId
        && typeof sendAck.id === 'string' && sendAck.id === janeAckMsg.data.id,
        'an emit with a callback did not get {ok:true, ...} (or the ack\'s id is not the '
        + 'broadcast message\'s id)',
        { joinAck, sendAck, broadcast: janeAckMsg.data });

  step('carol sends to johndoe\'s room with an ack callback: the refusal comes in the ack only');
  const carolMark3 = carol.events.length;
  const refusedAck = await carol.emitWithCallback('send-message-to-pr-room',
                                                  { pullRequestId, username: 'carol', message: 'Let me in?' });
  const carolAfterAck = 'Back to my own pull request.';
  carol.sendMessage(carolAfterAck);
  const carolOwn2 = await carol.waitForMessage('carol', carolAfterAck, carolMark3);
  check('ackOnRefusal',
        refusedAck && refusedAck.ok === false && refusedAck.error
        && refusedAck.error.code === 'not-a-member' && carolOwn2.index === carolMark3,
        'a refused emit with a callback did not get {ok:false, error:{code:"not-a-member"}} '
        + 'in the ack, or also got a pr-room-error event',
        { ack: refusedAck, carolEventsAfter: carol.events.slice(carolMark3) });

  // --- default transports: long-polling, then upgrade to websocket -----------------------
  step('bob connects with default transports (polling, then websocket upgrade) and chats');
  const bob = newUser('bob', pullRequestId, undefined);
  await bob.connected();
  const bobFirst = 'Hi all, bob here.';
  bob.sendMessage(bobFirst);
  await bob.waitForMessage('bob', bobFirst);
  await bob.upgraded();
  const bobSecond = 'Now over websocket.';
  bob.sendMessage(bobSecond);
  await bob.waitForMessage('bob', bobSecond);
  await john.waitForMessage('bob', bobFirst);
  await jane.waitForMessage('bob', bobSecond);
  const reply = 'Welcome, bob.';
  john.sendMessage(reply);
  const bobGotReply = await bob.waitForMessage('johndoe', reply);
  check('defaultTransportsChat',
        bob.handshakeTransport === 'polling' && bob.upgradedTo === 'websocket'
        && bob.socket.io.engine.transport.name === 'websocket'
        && hasMessageShape(bobGotReply.data, pullRequestId, 'johndoe', reply),
        'a default-transport client did not connect over polling, upgrade to websocket and '
        + 'exchange messages with the websocket users',
        { handshakeTransport: bob.handshakeTransport, upgradedTo: bob.upgradedTo,
          transportNow: bob.socket.io.engine.transport.name, bobDisplayed: bob.displayed });

  // --- nothing leaked from carol's room or carol's errors into johndoe's room ------------
  // Every carol event was confirmed delivered before johndoe's reply was sent, so anything
  // leaked would sit before that reply in johndoe's / janedoe's logs.
  await jane.waitForMessage('johndoe', reply);
  const foreign = (user) => user.events.filter(
    (e) => !(e.data && e.data.pullRequestId === pullRequestId) || e.event === 'pr-room-error'
           || (e.data && e.data.username === 'carol'));
  check('roomHearsNothingFromOtherRoom',
        foreign(john).length === 0 && foreign(jane).length === 0,
        'johndoe or janedoe received events of another room, or carol\'s errors',
        { johndoe: foreign(john), janedoe: foreign(jane) });

  // --- the Complete Example verbatim: sendMessage() called right after io() ---------------
  // The doc calls sendMessage() at top level, before the socket has connected.  socket.io-client
  // buffers that emit and flushes its buffer BEFORE firing 'connect', i.e. before the doc's
  // join-pr-room, so the server must refuse it visibly (not-a-member).
  step('the Complete Example verbatim (sendMessage before connect)');
  {
    const socket = io(url, { transports: ['websocket'] });
    sockets.push(socket);
    const username = 'johndoe';
    const log = [];
    let wake = () => {};
    socket.onAny((event, data) => { log.push({ event, data }); wake(); });
    socket.on('connect', () => {
      socket.emit('join-pr-room', { pullRequestId: docExampleId, username });
    });
    const displayed = [];
    socket.on('pr-room-message', (data) => {
      displayed.push(`${data.username}: ${data.message}`);
    });
    function sendMessage(text) {
      socket.emit('send-message-to-pr-room', { pullRequestId: docExampleId, username, message: text });
    }
    sendMessage(approved);
    // Barrier: once connected (and joined), send again; when that comes back, anything the
    // first send produced has already arrived.
    const second = 'Second message, sent after connecting.';
    await withTimeout('the verbatim example connects', new Promise((resolve) => {
      if (socket.connected) resolve(); else socket.once('connect', resolve);
    }));
    sendMessage(second);
    await withTimeout('the verbatim example sees its second message', new Promise((resolve) => {
      wake = () => {
        if (log.some((e) => e.event === 'pr-room-message' && e.data && e.data.message === second)) {
          resolve();
        }
      };
      wake();
    }));
    const refusal = log.find((e) => e.event === 'pr-room-error');
    check('docExampleVerbatim',
          !displayed.includes(`johndoe: ${approved}`)
            && refusal !== undefined && refusal.data.error.code === 'not-a-member'
            && refusal.data.event === 'send-message-to-pr-room'
            && displayed.includes(`johndoe: ${second}`),
          'the doc\'s Complete Example, run as written, sends before its join lands '
          + '(socket.io-client flushes the buffered send before the \'connect\' handler runs): '
          + 'the server must refuse it visibly with pr-room-error not-a-member, and the send '
          + 'after joining must be delivered',
          { displayed, events: log });
  }

  step('done: leave the rooms and close (as the doc\'s React cleanup does)');
  for (const user of [john, jane, bob, carol]) {
    user.socket.emit('leave-pr-room', { pullRequestId: user.pullRequestId, username: user.username });
  }
}

main().then(() => finish(0), (err) => finish(2, err && err.message || String(err)));
