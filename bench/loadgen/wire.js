'use strict';
// A minimal Socket.IO v5 client (Engine.IO v4, WebSocket only) over npm `ws`, for
// loadgen.js's `"client": "wire"`: the part of socket.io-client's Socket that loadgen.js
// uses, without its layers (engine.io-client's transport and emitters, socket.io-parser's
// decoder, the manager).  On two cores the load generator has one core, and with
// socket.io-client it ran out first in the rooms scenario, so that rate measured the load
// generator; this client puts the same frames on the wire with less of its CPU (most of
// what it spends is the system calls of reading and writing the sockets, which stay).
//
// What it speaks: the WebSocket handshake at /socket.io/?EIO=4&transport=websocket; the
// Engine.IO OPEN (its ping interval and timeout kept), PING answered with PONG, CLOSE, and
// MESSAGE; in a MESSAGE, the Socket.IO CONNECT, CONNECT_ERROR, DISCONNECT, EVENT and ACK
// packets of the default namespace, as text.  Not: long-polling, upgrades, binary
// attachments, other namespaces, reconnection (loadgen.js turns it off anyway).
const WebSocket = require('ws');

const OPEN = 48; // '0'
const CLOSE = 49; // '1'
const PING = 50; // '2'
const MESSAGE = 52; // '4'
// Socket.IO packet types, the character after the Engine.IO MESSAGE's '4'
const SIO_CONNECT = 48;
const SIO_DISCONNECT = 49;
const SIO_EVENT = 50;
const SIO_ACK = 51;
const SIO_CONNECT_ERROR = 52;

// The digits of an ack id from position `start` of `text`: [id or -1, where the JSON starts].
function ackId(text, start) {
  let end = start;
  while (end < text.length) {
    const c = text.charCodeAt(end);
    if (c < 48 || c > 57) break;
    end += 1;
  }
  return [end > start ? Number(text.slice(start, end)) : -1, end];
}

class Handlers {
  constructor() { this.map = new Map(); }

  on(name, fn) {
    const list = this.map.get(name);
    if (list) list.push(fn); else this.map.set(name, [fn]);
  }

  once(name, fn) {
    const wrapper = (...args) => { this.off(name, wrapper); fn(...args); };
    this.on(name, wrapper);
  }

  off(name, fn) {
    const list = this.map.get(name);
    if (!list) return;
    const at = list.indexOf(fn);
    if (at >= 0) list.splice(at, 1);
  }

  fire(name, ...args) {
    const list = this.map.get(name);
    if (!list) return;
    for (const fn of list.length === 1 ? list : list.slice()) fn(...args);
  }
}

class WireSocket {
  constructor(url, opts = {}) {
    this.connected = false;
    this.handlers = new Handlers();
    this.anyHandlers = [];
    this.acks = new Map();
    this.nextAck = 0;
    this.failed = false;
    // loadgen.js reads the engine's ping events and its handshake's ping settings here
    const engineHandlers = new Handlers();
    this.io = { engine: { on: (name, fn) => engineHandlers.on(name, fn), _pingInterval: null,
      _pingTimeout: null } };
    this.engineHandlers = engineHandlers;
    const target = `${url.replace(/^http/, 'ws').replace(/\/$/, '')}/socket.io/?EIO=4&transport=websocket`;
    this.ws = new WebSocket(target, { perMessageDeflate: false });
    this.timer = setTimeout(() => this.fail(new Error('timeout')), opts.timeout || 20000);
    this.ws.on('message', (data, isBinary) => {
      if (!isBinary) this.frame(data.toString());
    });
    this.ws.on('error', (err) => this.fail(err));
    this.ws.on('close', () => {
      if (this.connected) {
        this.connected = false;
        this.handlers.fire('disconnect', this.closing ? 'io client disconnect' : 'transport close');
      } else {
        this.fail(new Error('websocket closed'));
      }
    });
  }

  fail(err) {
    clearTimeout(this.timer);
    if (this.connected || this.failed || this.closing) return;
    this.failed = true;
    this.handlers.fire('connect_error', err);
    this.ws.terminate();
  }

  frame(text) {
    switch (text.charCodeAt(0)) {
      case MESSAGE: this.packet(text); break;
      case PING:
        this.ws.send('3');
        this.engineHandlers.fire('ping');
        break;
      case OPEN: {
        const open = JSON.parse(text.slice(1));
        this.io.engine._pingInterval = open.pingInterval;
        this.io.engine._pingTimeout = open.pingTimeout;
        this.ws.send('40');
        break;
      }
      case CLOSE: this.ws.close(); break;
      default: break;
    }
  }

  packet(text) {
    switch (text.charCodeAt(1)) {
      case SIO_EVENT: {
        const [, start] = ackId(text, 2); // (the server asks no acks of prroom's clients)
        const [event, ...args] = JSON.parse(text.slice(start));
        for (const fn of this.anyHandlers) fn(event, ...args);
        this.handlers.fire(event, ...args);
        break;
      }
      case SIO_ACK: {
        const [id, start] = ackId(text, 2);
        const ack = this.acks.get(id);
        if (ack) {
          this.acks.delete(id);
          ack(...JSON.parse(text.slice(start)));
        }
        break;
      }
      case SIO_CONNECT:
        clearTimeout(this.timer);
        this.connected = true;
        this.handlers.fire('connect');
        break;
      case SIO_CONNECT_ERROR: {
        let message = 'connect error';
        try { message = JSON.parse(text.slice(2)).message || message; } catch (err) { /* as is */ }
        this.fail(new Error(message));
        break;
      }
      case SIO_DISCONNECT:
        this.closing = true;
        this.ws.close();
        break;
      default: break;
    }
  }

  on(name, fn) { this.handlers.on(name, fn); return this; }

  once(name, fn) { this.handlers.once(name, fn); return this; }

  onAny(fn) { this.anyHandlers.push(fn); return this; }

  // emit(event, ...args[, ack]): an ack callback gets the server's ack arguments
  emit(event, ...args) {
    let id = '';
    if (typeof args[args.length - 1] === 'function') {
      id = this.nextAck;
      this.nextAck += 1;
      this.acks.set(id, args.pop());
    }
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(`42${id}${JSON.stringify([event, ...args])}`);
    }
    return this;
  }

  // socket.io-client's timeout(ms).emit(..., (err, ...ack) => ...)
  timeout(ms) {
    return {
      emit: (event, ...args) => {
        const callback = args.pop();
        const id = this.nextAck;
        const timer = setTimeout(() => {
          this.acks.delete(id);
          callback(new Error('operation has timed out'));
        }, ms);
        this.emit(event, ...args, (...reply) => { clearTimeout(timer); callback(null, ...reply); });
      },
    };
  }

  disconnect() {
    clearTimeout(this.timer);
    this.closing = true;
    if (this.ws.readyState === WebSocket.OPEN) {
      if (this.connected) this.ws.send('41');
      this.ws.close();
    } else {
      this.ws.terminate();
    }
    return this;
  }

  close() { return this.disconnect(); }
}

function io(url, opts) {
  return new WireSocket(url, opts);
}

module.exports = { io, WireSocket };
