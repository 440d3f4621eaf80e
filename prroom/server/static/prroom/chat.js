/* prroom chat page: one pull request's room in the browser.
 *
 * Plain browser JavaScript, no build step.  Needs the official socket.io-client (loaded by
 * the page before this file) and the JSON config the server renders into
 * <script id="prroom-config">.  Chat text is only ever inserted with textContent.
 */
(function () {
  'use strict';

  var ACK_TIMEOUT_MS = 8000;
  var MAX_MESSAGES_SHOWN = 500;
  var STORAGE_KEY = 'prroom.username';

  var config = JSON.parse(document.getElementById('prroom-config').textContent);
  var prId = config.pullRequestId;
  var limits = config.limits;
  var typingTimeoutMs = config.typingTimeout * 1000;
  // Re-send `typing` before the server's indicator would expire; call it idle a little later.
  var typingEveryMs = clamp(typingTimeoutMs / 2, 250, 10000);
  var typingIdleMs = clamp(typingTimeoutMs, 1000, 4000);
  // Hide someone's indicator ourselves if their stop-typing never comes (e.g. we were cut off).
  var typingStaleMs = typingTimeoutMs + 2000;

  // Identity hook (see prroom/web.py page_identity): the server may tell the page who the
  // user is ({username, auth}: `auth` goes into the Socket.IO handshake), or that the
  // connection itself is authenticated ({authenticated: true}, e.g. a session cookie; the
  // name then comes back in the join ack).  Either way there is no name form.
  var identity = config.identity || {};
  var serverIdentity = Boolean(identity.username || identity.auth || identity.authenticated);

  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    root: document.documentElement,
    status: $('status'), statusText: $('status-text'),
    messages: $('messages'), empty: $('empty'), typing: $('typing'),
    nameForm: $('name-form'), nameInput: $('name-input'), nameError: $('name-error'),
    composer: $('composer'), input: $('message-input'), send: $('send-button'),
    sendError: $('send-error'), counter: $('counter'),
    meLine: $('me-line'), meName: $('me-name'), changeName: $('change-name'),
    members: $('members'), memberCount: $('member-count'), membersNote: $('members-note')
  };

  var state = {
    socket: null,
    me: identity.username || null,  // the name we speak with
    joined: false,                  // the server confirmed our join (since the last connect)
    joining: false,
    everConnected: false,
    status: 'connecting',
    presenceKnown: false,           // the server sends member lists (pr-room-members)
    members: new Set(),
    typers: new Map(),              // username -> timer hiding a stale indicator
    seenIds: new Set(),
    typingActive: false, lastTypingAt: 0, idleTimer: null,
    sending: 0,                     // messages waiting for their ack
    unread: 0, baseTitle: document.title,
    recoveryOffered: false          // the server keeps sessions (pr-room-session) across blips
  };

  function clamp(value, low, high) { return Math.min(high, Math.max(low, value)); }
  function codePoints(text) { return Array.from(text).length; }  // what the server counts
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- connection state ---------------------------------------------------------------

  var STATUS_TEXT = {
    connecting: 'Connecting…', connected: 'Connected',
    reconnecting: 'Reconnecting…', offline: 'Offline'
  };

  function setStatus(name, detail) {
    state.status = name;
    ui.status.dataset.state = name;
    ui.root.dataset.state = name;
    ui.statusText.textContent = STATUS_TEXT[name] + (detail ? ' — ' + detail : '');
  }

  function connect() {
    if (typeof window.io !== 'function') {
      setStatus('offline', 'chat library not loaded');
      showProblem('The chat library could not be loaded from ' + config.clientUrl +
                  '. Check the network, or ask an administrator to check ' +
                  'PRROOM_SOCKETIO_CLIENT_URL.');
      return;
    }
    var options = { path: config.socketPath };
    if (identity.auth) options.auth = identity.auth;
    var socket = state.socket = window.io(options);

    socket.on('connect', function () {
      // Back after a blip: the server replays what we missed when it recovered the session;
      // when it could not, say so rather than let a gap pass for silence.
      if (state.everConnected && state.recoveryOffered && !socket.recovered) {
        addNotice('Messages may have been missed while you were away.');
      }
      state.everConnected = true;
      state.joined = false;
      if (state.me || serverIdentity) {
        join();
      } else {
        setStatus('connected');
      }
    });

    socket.on('disconnect', function (reason) {
      state.joined = false;
      state.joining = false;
      stopTyping(false);
      clearTypers();
      if (reason === 'io client disconnect') {
        setStatus('offline');
      } else if (reason === 'io server disconnect') {
        // The server closed this connection itself; socket.io does not retry that on its own.
        setStatus('reconnecting');
        window.setTimeout(function () { socket.connect(); }, 1000 + Math.random() * 1000);
      } else {
        setStatus(navigator.onLine === false ? 'offline' : 'reconnecting');
      }
    });

    socket.on('connect_error', function (err) {
      if (!socket.active) {  // refused by the server (e.g. not signed in): no retry
        setStatus('offline', 'refused');
        showProblem(describeError(err.data || { message: err.message }));
        return;
      }
      if (navigator.onLine === false) setStatus('offline');
      else setStatus(state.everConnected ? 'reconnecting' : 'connecting');
    });

    socket.io.on('reconnect_attempt', function () {
      if (navigator.onLine !== false) setStatus(state.everConnected ? 'reconnecting' : 'connecting');
    });
    socket.io.on('reconnect_failed', function () { setStatus('offline', 'gave up'); });

    socket.on('pr-room-message', function (m) { if (ours(m)) addMessage(m); });
    socket.on('pr-room-session', function () { state.recoveryOffered = true; });
    socket.on('typing', function (e) { if (ours(e)) someoneTyping(e.username); });
    socket.on('stop-typing', function (e) { if (ours(e)) someoneStopped(e.username); });
    socket.on('pr-room-error', function (e) {
      if (e && (e.event === 'typing' || e.event === 'stop-typing')) return;  // not the user's concern
      if (e && e.pullRequestId !== undefined && e.pullRequestId !== prId) return;
      handleRefusal(e && e.error);
    });
    // Presence (sent by servers that support it): the authoritative member list.
    socket.on('pr-room-members', function (e) {
      if (ours(e) && Array.isArray(e.members)) setMembers(e.members);
    });
    socket.on('pr-room-user-joined', function (e) {
      if (ours(e)) { state.presenceKnown = true; addMember(e.username); }
    });
    socket.on('pr-room-user-left', function (e) {
      if (ours(e)) { state.presenceKnown = true; removeMember(e.username); }
    });

    window.addEventListener('offline', function () { setStatus('offline'); });
    window.addEventListener('online', function () {
      if (socket.connected) setStatus(state.joined || !state.me ? 'connected' : 'connecting');
      else { setStatus('reconnecting'); if (!socket.active) socket.connect(); }
    });
  }

  function ours(event) { return event && event.pullRequestId === prId; }

  function join() {
    var socket = state.socket;
    if (!socket || !socket.connected || state.joining) return;
    state.joining = true;
    var payload = { pullRequestId: prId };
    if (state.me) payload.username = state.me;
    socket.timeout(ACK_TIMEOUT_MS).emit('join-pr-room', payload, function (err, ack) {
      state.joining = false;
      if (err) {  // no answer: try again while the connection lasts
        if (socket.connected) window.setTimeout(join, 1000);
        return;
      }
      if (!ack || !ack.ok) {
        joinRefused(ack && ack.error);
        return;
      }
      var first = !state.joined && ui.composer.hidden;
      state.joined = true;
      state.me = ack.username || state.me;
      if (Array.isArray(ack.members)) setMembers(ack.members);
      state.members.add(state.me);
      renderMembers();  // the member list may have come first, before we knew our own name
      showComposer(first);
      setStatus('connected');
    });
  }

  function joinRefused(error) {
    var code = error && error.code;
    if (code === 'rate-limited') {  // joined and left too often: try again when allowed
      window.setTimeout(join, Math.max(1, Number(error.retryAfter) || 1) * 1000);
      return;
    }
    if (!serverIdentity && (error && error.field === 'username' ||
                            code === 'identity-mismatch')) {
      forgetName();
      askName(describeError(error));
      setStatus('connected');
      return;
    }
    setStatus('offline', 'could not join');
    showProblem(describeError(error));
  }

  // A problem that stops the chat: shown where the text box is, even before a name is given.
  function showProblem(text) {
    ui.nameForm.hidden = true;
    ui.composer.hidden = false;
    showError(ui.sendError, text);
  }

  // -- errors in plain words ----------------------------------------------------------

  function describeError(error) {
    error = error || {};
    switch (error.code) {
      case 'message-too-long':
        return 'Your message is too long: the limit is ' +
          Number(error.limit || limits.maxMessageLength).toLocaleString() +
          ' characters. Shorten it and send again.';
      case 'invalid-field':
        if (error.field === 'message') {
          return 'Your message contains characters that cannot be sent (control ' +
            'characters). Remove them and try again.';
        }
        if (error.field === 'username') return 'That name cannot be used: ' + error.message;
        return 'The server could not accept that: ' + error.message;
      case 'missing-field':
      case 'invalid-payload':
        return 'The server could not read that request: ' + error.message;
      case 'not-a-member':
        return 'You were no longer in this room. Rejoining — send your message again in a moment.';
      case 'identity-mismatch':
        return 'This page is already in the room under another name. Reload the page.';
      case 'unauthorized':
        return 'You are not signed in, or your sign-in has expired. Reload the page to sign in again.';
      case 'authentication-error':
        return 'Signing in failed on the server. Reload the page to try again.';
      case 'forbidden':
        return 'You are not allowed to chat about this pull request.';
      case 'rate-limited':
        return 'You are sending too fast. Wait a moment and try again.';
      case 'too-many-rooms':
      case 'too-many-connections':
        return 'Too many chats are open. Close some tabs and reload this page.';
      case 'unknown-event':
        return 'This page is out of date with the server. Reload the page.';
      case 'internal-error':
        return 'Something went wrong on the server. Try again.';
      default:
        return error.message || 'The server refused the request.';
    }
  }

  function showError(node, text) {
    node.textContent = text;
    if (node === ui.sendError) ui.input.setAttribute('aria-invalid', 'true');
    if (node === ui.nameError) ui.nameInput.setAttribute('aria-invalid', 'true');
  }

  function clearError(node) {
    if (!node.textContent) return;
    node.textContent = '';
    if (node === ui.sendError) ui.input.removeAttribute('aria-invalid');
    if (node === ui.nameError) ui.nameInput.removeAttribute('aria-invalid');
  }

  function handleRefusal(error) {
    showError(ui.sendError, describeError(error));
    if (error && error.code === 'not-a-member') {
      state.joined = false;
      join();
    }
  }

  // -- name (auth mode `none`) --------------------------------------------------------

  function storedName() {
    try { return window.localStorage.getItem(STORAGE_KEY); } catch (e) { return null; }
  }
  function rememberName(name) {
    try { window.localStorage.setItem(STORAGE_KEY, name); } catch (e) { /* storage off */ }
  }
  function forgetName() {
    state.me = null;
    try { window.localStorage.removeItem(STORAGE_KEY); } catch (e) { /* storage off */ }
  }

  function nameProblem(name) {
    if (!name) return 'Enter a name.';
    if (codePoints(name) > limits.maxUsernameLength) {
      return 'That name is too long: at most ' + limits.maxUsernameLength + ' characters.';
    }
    if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'That name contains control characters.';
    return null;
  }

  function askName(error, onLoad) {
    ui.composer.hidden = true;
    ui.nameForm.hidden = false;
    if (state.me) ui.nameInput.value = state.me;
    if (error) showError(ui.nameError, error); else clearError(ui.nameError);
    // In an iframe, never pull focus away from the host page on load.
    if (!(onLoad && config.embed)) ui.nameInput.focus();
  }

  ui.nameForm.addEventListener('submit', function (event) {
    event.preventDefault();
    var name = ui.nameInput.value.trim();
    var problem = nameProblem(name);
    if (problem) { showError(ui.nameError, problem); ui.nameInput.focus(); return; }
    clearError(ui.nameError);
    state.me = name;
    rememberName(name);
    ui.nameForm.hidden = true;
    showComposer(true);
    if (state.socket && state.socket.connected) {
      setStatus('connecting', 'joining');
      join();
    }
  });

  ui.changeName.addEventListener('click', function () {
    var socket = state.socket;
    var old = state.me;
    stopTyping(true);
    if (socket && socket.connected && state.joined) {
      socket.emit('leave-pr-room', { pullRequestId: prId, username: old }, function () {});
    }
    state.joined = false;
    if (!state.presenceKnown) removeMember(old);
    askName();
  });

  // -- composing and sending ----------------------------------------------------------

  function showComposer(focus) {
    ui.nameForm.hidden = true;
    ui.composer.hidden = false;
    ui.meName.textContent = state.me || '';
    ui.meLine.hidden = !state.me || serverIdentity;
    if (focus) ui.input.focus();
  }

  function autoGrow() {
    ui.input.style.height = 'auto';
    ui.input.style.height = Math.min(ui.input.scrollHeight + 2, 160) + 'px';
  }

  function updateCounter() {
    var length = codePoints(ui.input.value);
    var limit = limits.maxMessageLength;
    if (length > limit * 0.9) {
      ui.counter.textContent = length.toLocaleString() + ' / ' + limit.toLocaleString();
      ui.counter.classList.toggle('over', length > limit);
    } else if (ui.counter.textContent) {
      ui.counter.textContent = '';
      ui.counter.classList.remove('over');
    }
  }

  function startTyping() {
    if (!state.joined) return;
    var now = Date.now();
    if (!state.typingActive || now - state.lastTypingAt >= typingEveryMs) {
      state.typingActive = true;
      state.lastTypingAt = now;
      // With an ack: a refusal comes back here (and is ignored) instead of as pr-room-error.
      state.socket.emit('typing', { pullRequestId: prId, username: state.me }, function () {});
    }
    window.clearTimeout(state.idleTimer);
    state.idleTimer = window.setTimeout(function () { stopTyping(true); }, typingIdleMs);
  }

  function stopTyping(tellServer) {
    window.clearTimeout(state.idleTimer);
    if (!state.typingActive) return;
    state.typingActive = false;
    if (tellServer && state.joined && state.socket.connected) {
      state.socket.emit('stop-typing', { pullRequestId: prId, username: state.me }, function () {});
    }
  }

  ui.input.addEventListener('input', function () {
    autoGrow();
    updateCounter();
    clearError(ui.sendError);
    if (ui.input.value.trim()) startTyping(); else stopTyping(true);
  });
  ui.input.addEventListener('blur', function () { stopTyping(true); });
  ui.input.addEventListener('keydown', function (event) {
    if (event.key === 'Enter' && !event.shiftKey && !event.altKey && !event.ctrlKey &&
        !event.metaKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  ui.composer.addEventListener('submit', function (event) {
    event.preventDefault();
    send();
  });

  function send() {
    // Drop trailing whitespace and leading blank lines; keep indentation (code snippets).
    var text = ui.input.value.replace(/\s+$/, '').replace(/^(?:[ \t]*\n)+/, '');
    var sentFromButton = document.activeElement === ui.send;
    if (!text) { ui.input.focus(); return; }
    if (!state.joined) {
      showError(ui.sendError, (state.status === 'offline' ? 'You are offline.'
                               : 'The chat is not connected right now.') +
                ' Your message is kept here: send it again once the status says Connected.');
      return;
    }
    stopTyping(true);
    // Empty the box at once, so the next message can be typed while this one is confirmed;
    // if the server refuses it, the text comes back.
    var draft = ui.input.value;
    ui.input.value = '';
    afterInputChange();
    if (sentFromButton) ui.input.focus();
    state.sending += 1;
    ui.send.setAttribute('aria-busy', 'true');
    state.socket.timeout(ACK_TIMEOUT_MS).emit(
      'send-message-to-pr-room', { pullRequestId: prId, username: state.me, message: text },
      function (err, ack) {
        state.sending -= 1;
        if (!state.sending) ui.send.removeAttribute('aria-busy');
        if (!err && ack && ack.ok) {
          clearError(ui.sendError);
          return;
        }
        ui.input.value = draft + (ui.input.value ? '\n' + ui.input.value : '');
        afterInputChange();
        if (err) {
          showError(ui.sendError, 'The server did not confirm your message in time. It may ' +
                    'not have been sent: check the conversation before sending it again.');
        } else {
          handleRefusal(ack && ack.error);
        }
      });
  }

  function afterInputChange() {
    autoGrow();
    updateCounter();
  }

  // -- messages -----------------------------------------------------------------------

  function formatTime(date) {
    return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function nearBottom() {
    var list = ui.messages;
    return list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  }

  function addNotice(text) {
    if (ui.empty.parentNode) ui.empty.remove();
    var item = el('li', 'notice', text);
    item.setAttribute('role', 'status');
    ui.messages.appendChild(item);
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function addMessage(m) {
    if (typeof m.message !== 'string' || typeof m.username !== 'string') return;
    if (m.id !== undefined) {
      if (state.seenIds.has(m.id)) return;
      state.seenIds.add(m.id);
      if (state.seenIds.size > 5000) state.seenIds = new Set(Array.from(state.seenIds).slice(-1000));
    }
    someoneStopped(m.username);
    seen(m.username);
    if (ui.empty.parentNode) ui.empty.remove();

    // posted by an integration (HTTP API, prroom.post_message): a bot's, never a person's,
    // even when a person chose the same name
    var bot = m.via === 'api';
    var mine = !bot && m.username === state.me;
    var sentAt = new Date(typeof m.sentAt === 'number' ? m.sentAt : Date.now());
    var item = el('li', 'message' + (mine ? ' mine' : '') + (bot ? ' bot' : ''));
    var meta = el('p', 'meta');
    meta.appendChild(el('span', 'author', m.username));
    if (bot) {
      var badge = el('span', 'badge', 'bot');
      badge.title = 'Posted by an integration, not typed by a person';
      meta.appendChild(badge);
    }
    meta.appendChild(el('span', 'visually-hidden', ' at '));
    var time = el('time', 'time', formatTime(sentAt));
    time.dateTime = sentAt.toISOString();
    time.title = sentAt.toLocaleString();
    meta.appendChild(time);
    meta.appendChild(el('span', 'visually-hidden', ': '));
    item.appendChild(meta);
    item.appendChild(el('p', 'text', m.message));

    var stick = mine || nearBottom();
    ui.messages.appendChild(item);
    while (ui.messages.children.length > MAX_MESSAGES_SHOWN) {
      ui.messages.removeChild(ui.messages.firstElementChild);
    }
    if (stick) ui.messages.scrollTop = ui.messages.scrollHeight;
    if (document.hidden && !mine) {
      state.unread += 1;
      document.title = '(' + state.unread + ') ' + state.baseTitle;
    }
  }

  document.addEventListener('visibilitychange', function () {
    if (!document.hidden && state.unread) {
      state.unread = 0;
      document.title = state.baseTitle;
    }
  });

  // -- typing indicator ---------------------------------------------------------------

  function someoneTyping(name) {
    if (typeof name !== 'string' || name === state.me) return;
    seen(name);
    window.clearTimeout(state.typers.get(name));
    state.typers.set(name, window.setTimeout(function () { someoneStopped(name); },
                                             typingStaleMs));
    renderTyping();
  }

  function someoneStopped(name) {
    if (!state.typers.has(name)) return;
    window.clearTimeout(state.typers.get(name));
    state.typers.delete(name);
    renderTyping();
  }

  function clearTypers() {
    state.typers.forEach(function (timer) { window.clearTimeout(timer); });
    state.typers.clear();
    renderTyping();
  }

  function renderTyping() {
    var names = Array.from(state.typers.keys());
    var text = '';
    if (names.length === 1) text = names[0] + ' is typing…';
    else if (names.length === 2) text = names[0] + ' and ' + names[1] + ' are typing…';
    else if (names.length === 3) text = names[0] + ', ' + names[1] + ' and ' + names[2] + ' are typing…';
    else if (names.length > 3) {
      text = names[0] + ', ' + names[1] + ' and ' + (names.length - 2) + ' others are typing…';
    }
    ui.typing.textContent = text;
  }

  // -- members ------------------------------------------------------------------------

  function setMembers(names) {
    state.presenceKnown = true;
    state.members = new Set(names.filter(function (n) { return typeof n === 'string'; }));
    if (state.joined && state.me) state.members.add(state.me);
    renderMembers();
  }

  // Without presence events, everyone seen speaking or typing is listed.  With them, the
  // server's list is the truth (a message posted from outside is not a member).
  function seen(name) {
    if (!state.presenceKnown) addMember(name);
  }

  function addMember(name) {
    if (typeof name !== 'string' || !name || state.members.has(name)) return;
    state.members.add(name);
    renderMembers();
  }

  function removeMember(name) {
    someoneStopped(name);
    if (name === state.me && state.joined) return;  // we are still here
    if (state.members.delete(name)) renderMembers();
  }

  function renderMembers() {
    var me = state.me;
    var names = Array.from(state.members).sort(function (a, b) {
      if (a === me) return -1;
      if (b === me) return 1;
      return a.localeCompare(b);
    });
    ui.members.textContent = '';
    names.forEach(function (name) {
      var item = el('li', name === me ? 'member me' : 'member', name);
      if (name === me) item.appendChild(el('span', 'you', ' (you)'));
      ui.members.appendChild(item);
    });
    ui.memberCount.textContent = names.length ? '(' + names.length + ')' : '';
    ui.membersNote.hidden = state.presenceKnown;
  }

  // -- start --------------------------------------------------------------------------

  setStatus('connecting');
  renderMembers();
  if (!state.me && !serverIdentity) {
    var remembered = storedName();
    if (remembered && !nameProblem(remembered)) state.me = remembered;
  }
  if (state.me || serverIdentity) showComposer(!config.embed); else askName(null, true);
  connect();
})();
