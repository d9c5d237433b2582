// The SecureMCP chat page: one WebSocket to the server that served this page,
// seed-dialect calls ({"id", "method": "invoke_tool", "params": {...}}) and
// chat.message notifications for the room we joined. With an admin token the
// socket offers ["securemcp.seed", "bearer." + token]: a browser cannot set
// Authorization, and the named subprotocol is what the server answers with.
"use strict";

const HISTORY = 50;
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const RATE_LIMITED = -31029;
const ROOMS_EVERY_MS = 15000;
const SEED_SUBPROTOCOL = "securemcp.seed";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  banner: $("banner"),
  roomList: $("room-list"),
  roomForm: $("room-form"),
  roomName: $("room-name"),
  roomTitle: $("room-title"),
  messages: $("messages"),
  sendForm: $("send-form"),
  username: $("username"),
  message: $("message"),
  send: $("send"),
  adminForm: $("admin-form"),
  adminToken: $("admin-token"),
  adminUse: $("admin-use"),
  clearRoom: $("clear-room"),
};

const state = {
  ws: null,
  ready: false,
  nextId: 1,
  pending: new Map(), // request id -> {resolve, reject}
  room: "general",
  generation: 0, // bumped on every room switch, so late answers for an old room are ignored
  seen: new Set(), // message ids shown in the current room
  buffered: null, // live messages that arrive while the history loads
  attempts: 0,
  reconnectTimer: null,
  bannerTimer: null,
  roomsTimer: null,
  token: null, // the admin token, kept in memory only
  tokenUntried: false, // the token has not yet opened a connection
  admin: false, // the server lists clear_history for us
};

class CallError extends Error {
  constructor(error) {
    super(error.message || "error");
    this.code = error.code;
    this.data = error.data;
  }
}

// --- connection -----------------------------------------------------------

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/`;
}

function connect() {
  state.reconnectTimer = null;
  // While reconnecting, the status stays "Disconnected" until the server greets us.
  if (state.attempts === 0) setStatus("connecting", "Connecting…");
  let ws;
  try {
    ws = state.token === null
      ? new WebSocket(socketUrl())
      : new WebSocket(socketUrl(), [SEED_SUBPROTOCOL, `bearer.${state.token}`]);
  } catch {
    // Not sendable as a subprotocol entry (spaces, "/", "=" ...): go on without it.
    dropToken("That admin token cannot be sent from a browser.");
    ws = new WebSocket(socketUrl());
  }
  state.ws = ws;
  ws.addEventListener("message", (event) => onFrame(event.data));
  ws.addEventListener("close", () => onClose(ws));
  // An error is always followed by close, which does the work.
}

function onClose(ws) {
  if (state.ws !== ws) return;
  const greeted = state.ready;
  state.ws = null;
  state.ready = false;
  for (const { reject } of state.pending.values()) reject(new CallError({ message: "disconnected" }));
  state.pending.clear();
  updateControls();
  if (!greeted && state.tokenUntried) {
    // The server refused the upgrade (a browser is not told why): the token is
    // wrong, so go back to chatting anonymously right away.
    dropToken("Admin token refused.");
    connect();
    return;
  }
  // Exponential backoff, capped; half of each delay is random ("equal jitter"),
  // so that many pages dropped at once do not all come back in the same instant.
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** state.attempts);
  const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
  state.attempts += 1;
  const seconds = Math.max(1, Math.round(delay / 1000));
  setStatus("disconnected", "Disconnected");
  showBanner(`Disconnected from the server. Reconnecting in ${seconds} s…`);
  state.reconnectTimer = setTimeout(connect, delay);
}

function onFrame(text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    return;
  }
  if (frame.id === "welcome") {
    onWelcome(frame.result?.tools ?? []);
  } else if (frame.method === "chat.message" && frame.params) {
    onChatMessage(frame.params);
  } else if (frame.method === "chat.cleared" && frame.params?.room === state.room) {
    state.seen = new Set();
    ui.messages.replaceChildren();
    showEmpty();
  } else if (frame.id !== undefined && state.pending.has(frame.id)) {
    const { resolve, reject } = state.pending.get(frame.id);
    state.pending.delete(frame.id);
    if (frame.error) reject(new CallError(frame.error));
    else resolve(frame.result);
  }
}

function onWelcome(tools) {
  const reconnected = state.attempts > 0;
  state.ready = true;
  state.attempts = 0;
  state.admin = state.token !== null && tools.includes("clear_history");
  setStatus("connected", state.admin ? "Connected as admin" : "Connected");
  if (reconnected) hideBanner();
  if (state.tokenUntried) {
    state.tokenUntried = false;
    ui.adminToken.value = "";
    if (state.admin) showBanner("Signed in as admin.", 3);
    else showBanner("This token does not grant the admin scope.");
  }
  updateControls();
  enterRoom(state.room, null);
}

function call(toolName, params) {
  return new Promise((resolve, reject) => {
    if (!state.ready) {
      reject(new CallError({ message: "not connected" }));
      return;
    }
    const id = String(state.nextId++);
    state.pending.set(id, { resolve, reject });
    state.ws.send(JSON.stringify({ id, method: "invoke_tool", params: { tool_name: toolName, params } }));
  });
}

// --- rooms and messages ---------------------------------------------------

async function enterRoom(room, previous) {
  const generation = ++state.generation;
  state.room = room;
  state.seen = new Set();
  state.buffered = [];
  ui.roomTitle.textContent = `# ${room}`;
  ui.messages.replaceChildren();
  renderRooms(null);
  try {
    if (previous !== null && previous !== room) {
      // Not fatal: the old room may be gone already; joining the new one matters.
      await call("leave_room", { room: previous }).catch(() => {});
    }
    await call("join_room", { room });
    const history = await call("get_messages", { room, limit: HISTORY });
    if (generation !== state.generation) return;
    for (const message of history.messages) addMessage(message);
    for (const message of state.buffered) addMessage(message);
    state.buffered = null;
    if (ui.messages.children.length === 0) showEmpty();
    await refreshRooms();
  } catch (error) {
    if (generation !== state.generation) return;
    state.buffered = null;
    report(error);
    // A refused room name: go back where we were, so the page never shows a room we are not in.
    if (previous !== null && state.ready) enterRoom(previous, null);
  }
}

async function refreshRooms() {
  try {
    const answer = await call("list_rooms", {});
    renderRooms(answer.rooms);
  } catch (error) {
    report(error);
  }
}

let knownRooms = [];

// Member and message counts change with every message and visitor: refresh
// the list soon after activity (at most once a second) and now and then anyway.
function refreshRoomsSoon() {
  if (state.roomsTimer !== null) return;
  state.roomsTimer = setTimeout(() => {
    state.roomsTimer = null;
    if (state.ready) refreshRooms();
  }, 1000);
}

function renderRooms(rooms) {
  if (rooms !== null) knownRooms = rooms;
  const names = knownRooms.map((r) => r.name);
  const shown = names.includes(state.room) ? knownRooms : [...knownRooms, { name: state.room }];
  ui.roomList.replaceChildren(
    ...shown.map((room) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "room";
      button.dataset.room = room.name;
      if (room.name === state.room) button.setAttribute("aria-current", "true");
      const name = document.createElement("span");
      name.textContent = `# ${room.name}`;
      button.append(name);
      if (typeof room.members === "number") {
        const count = document.createElement("span");
        count.className = "count";
        count.textContent = `${room.members} online`;
        button.append(count);
      }
      button.addEventListener("click", () => switchRoom(room.name));
      const item = document.createElement("li");
      item.append(button);
      return item;
    }),
  );
}

function switchRoom(room) {
  if (room === state.room || !state.ready) return;
  hideBanner();
  enterRoom(room, state.room);
}

function onChatMessage(message) {
  if (message.room !== undefined && message.room !== state.room) return;
  refreshRoomsSoon();
  if (state.buffered !== null) state.buffered.push(message);
  else addMessage(message);
}

function showEmpty() {
  const item = document.createElement("li");
  item.className = "empty";
  item.textContent = "No messages yet. Say hello!";
  ui.messages.append(item);
}

function addMessage(message) {
  if (state.seen.has(message.id)) return;
  state.seen.add(message.id);
  const list = ui.messages;
  list.querySelector(".empty")?.remove();

  const item = document.createElement("li");
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = message.username;
  const when = document.createElement("time");
  when.dateTime = message.timestamp;
  const date = new Date(message.timestamp);
  when.textContent = Number.isNaN(date.getTime())
    ? message.timestamp
    : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  meta.append(who, when);
  const text = document.createElement("p");
  text.className = "text";
  text.textContent = message.message;
  item.append(meta, text);
  keepingBottom(() => list.append(item));
}

// Runs a change that may move the message list; if the list showed its newest
// message before, it still does after (a reader scrolled up is left alone).
function keepingBottom(change) {
  const list = ui.messages;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  change();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

async function sendMessage() {
  const username = ui.username.value.trim();
  const message = ui.message.value;
  if (!username || !message.trim()) return;
  localStorage.setItem("securemcp-chat-username", username);
  try {
    await call("send_message", { username, message, room: state.room });
    // Only what was sent goes: a message typed while this one was on its way stays.
    if (ui.message.value === message) ui.message.value = "";
    hideBanner();
    refreshRooms();
  } catch (error) {
    report(error);
  }
  // Back to typing after a click on Send; never steal the focus from another field.
  if (document.activeElement === ui.send) ui.message.focus();
}

// --- status and errors ----------------------------------------------------

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
}

function updateControls() {
  ui.send.disabled = !state.ready;
  ui.clearRoom.hidden = !state.admin;
  ui.clearRoom.disabled = !state.ready;
  ui.adminUse.textContent = state.token === null ? "Sign in" : "Use another";
}

// --- admin ----------------------------------------------------------------

function useToken(token) {
  state.token = token;
  state.tokenUntried = true;
  state.admin = false;
  reconnectNow();
}

function dropToken(reason) {
  state.token = null;
  state.tokenUntried = false;
  state.admin = false;
  showBanner(reason);
  updateControls();
}

function reconnectNow() {
  clearTimeout(state.reconnectTimer);
  state.attempts = 0;
  const old = state.ws;
  state.ws = null; // its close is not a drop to recover from
  state.ready = false;
  for (const { reject } of state.pending.values()) reject(new CallError({ message: "disconnected" }));
  state.pending.clear();
  if (old !== null) old.close();
  connect();
}

async function clearRoom() {
  const room = state.room;
  try {
    await call("clear_history", { room });
    showBanner(`History of #${room} cleared.`, 3);
  } catch (error) {
    report(error);
  }
}

function showBanner(text, seconds) {
  clearTimeout(state.bannerTimer);
  keepingBottom(() => {
    ui.banner.textContent = text;
    ui.banner.hidden = false;
  });
  if (seconds) state.bannerTimer = setTimeout(hideBanner, seconds * 1000);
}

function hideBanner() {
  clearTimeout(state.bannerTimer);
  keepingBottom(() => {
    ui.banner.hidden = true;
    ui.banner.textContent = "";
  });
}

function report(error) {
  if (!(error instanceof CallError)) {
    showBanner(String(error));
  } else if (error.code === RATE_LIMITED) {
    const wait = Number(error.data?.retry_after ?? 1);
    const shown = Math.max(1, Math.ceil(wait));
    showBanner(`Rate limited: you are sending too fast. Try again in ${shown} s.`, shown);
  } else if (error.code !== undefined) {
    showBanner(`Error ${error.code}: ${error.message}`);
  }
  // Calls cut short by a disconnect carry no code: the disconnect banner says it all.
}

// --- wiring ---------------------------------------------------------------

ui.username.value = localStorage.getItem("securemcp-chat-username") ?? "";
ui.sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
});
ui.adminForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.adminToken.value.trim();
  if (token) useToken(token);
});
ui.clearRoom.addEventListener("click", clearRoom);
ui.roomForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const room = ui.roomName.value.trim();
  if (!room) return;
  ui.roomName.value = "";
  switchRoom(room);
});
updateControls();
connect();
setInterval(() => {
  if (state.ready) refreshRooms();
}, ROOMS_EVERY_MS);
