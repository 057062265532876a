// The OmniNudge web client: login, device keys, conversations, end-to-end encrypted chat.
//
// Everything user-supplied reaches the page through textContent or attribute setters,
// never innerHTML. Private keys never leave Web Crypto (see crypto.js, store.js).

import { api, ApiError, setToken } from "./api.js";
import {
  deviceFingerprint,
  EnvelopeRejected,
  generateDeviceKeys,
  openEnvelope,
  seal,
} from "./crypto.js";
import { Realtime } from "./realtime.js";
import * as store from "./store.js";
import { el, $, show, formatTime, shortId } from "./dom.js";

const PAGE = 30;
const TYPING_SEND_MS = 2000;
const TYPING_SHOW_MS = 5000;

const S = {
  me: null,
  device: null, // {deviceId, ecdhPrivate, signingPrivate, publicKey, signingKey}
  realtime: null,
  conversations: new Map(), // id -> conversation (API.md)
  order: [],
  names: new Map(), // user id -> username
  devices: new Map(), // user id -> [device]
  current: null, // conversation id shown
  nextCursor: null,
  rendered: new Map(), // message id -> <li>
  pending: new Map(), // client_msg_id -> <li> (not yet confirmed)
  statuses: new Map(), // message id -> delivery status for my messages
  media: new Map(), // message id -> media id (current conversation)
  presence: new Map(), // user id -> {online, last_seen}
  lastTypingSent: 0,
  typingTimer: null,
  slideshow: null, // {conversation_id, state}
  browse: { subreddit: null, sort: "hot", after: null },
};

// --- start ------------------------------------------------------------------------------

async function start() {
  bindUi();
  const params = new URLSearchParams(location.search);
  if (params.has("code") && params.has("state")) {
    // Back from Reddit's authorize page (API.md: POST /api/auth/session {code, state}).
    history.replaceState(null, "", "/");
    try {
      const session = await api("POST", "/api/auth/session", {
        code: params.get("code"),
        state: params.get("state"),
      });
      return enter(session.user, session.access_token);
    } catch (err) {
      $("login-error").textContent = `Reddit login failed: ${err.message}`;
    }
  }
  try {
    const me = await api("GET", "/api/me");
    return enter(me, null);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) {
      $("login-error").textContent = err.message;
    }
  }
  await showLogin();
}

async function showLogin() {
  show("loading", false);
  show("app-view", false);
  show("login-view", true);
  // Dev login exists only when enabled: an empty body answers 400 there, 404 otherwise.
  const [dev, reddit] = await Promise.all([
    api("POST", "/api/auth/dev-login", {}, { raw: true }).catch(() => null),
    // Not followed: a configured login redirects to Reddit (an opaque answer here).
    api("GET", "/api/auth/reddit/login", undefined, { raw: true, redirect: "manual" }).catch(() => null),
  ]);
  const devOn = dev !== null && dev.status !== 404;
  // A configured Reddit login answers with a redirect (opaque to fetch) or a 3xx.
  const redditOn = reddit !== null && reddit.status !== 404 && reddit.status < 500;
  show("dev-login-form", devOn);
  show("reddit-login", redditOn);
  show("login-unavailable", !devOn && !redditOn);
  (devOn ? $("dev-username") : $("reddit-login")).focus();
}

async function devLogin(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    const session = await api("POST", "/api/auth/dev-login", { username: $("dev-username").value.trim() });
    await enter(session.user, session.access_token);
  } catch (err) {
    $("login-error").textContent = `Login failed: ${err.message}`;
  }
}

async function enter(me, accessToken) {
  setToken(accessToken);
  S.me = me;
  S.names.set(me.id, me.username);
  $("me").textContent = `u/${me.username}`;
  show("logout", true);
  S.device = await ensureDevice(me.id);
  show("loading", false);
  show("login-view", false);
  show("app-view", true);
  document.body.dataset.ready = "true";
  await loadConversations();
  const resumeFrom = await store.get("stream", me.id);
  S.realtime = new Realtime({
    deviceId: S.device.deviceId,
    token: accessToken,
    resumeFrom: Number.isInteger(resumeFrom) ? resumeFrom : null,
    onFrame,
    onStatus: setConnectionStatus,
    onAcked: (seq) => store.put("stream", me.id, seq),
  });
  S.realtime.start();
}

/** This browser's device for `userId`: keys made once, kept in IndexedDB, registered. */
async function ensureDevice(userId) {
  let record = await store.get("keys", userId);
  for (let attempt = 0; attempt < 2; attempt++) {
    if (!record) {
      const keys = await generateDeviceKeys();
      const random = crypto.getRandomValues(new Uint8Array(9));
      const suffix = Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
      record = { deviceId: `web-${suffix}`, ...keys };
      await store.put("keys", userId, record);
    }
    try {
      await api("PUT", `/api/devices/${record.deviceId}`, {
        public_key: record.publicKey,
        signing_key: record.signingKey,
        name: browserName(),
      });
      return record;
    } catch (err) {
      // Our id taken or keys refused: the stored keys are unusable, make a new device.
      if (err instanceof ApiError && (err.status === 403 || err.status === 409)) {
        record = null;
        continue;
      }
      throw err;
    }
  }
  throw new Error("could not register this browser as a device");
}

function browserName() {
  const ua = navigator.userAgent;
  const name = /Firefox/.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrom/.test(ua) ? "Chromium" : /Safari/.test(ua) ? "Safari" : "Browser";
  return `${name} (web)`;
}

async function logout() {
  try {
    await api("POST", "/api/auth/logout");
  } catch {
    // already logged out
  }
  if (S.realtime) S.realtime.stop();
  setToken(null);
  location.assign("/");
}

function setConnectionStatus(status) {
  const labels = { connecting: "Connecting…", online: "Online", offline: "Offline: reconnecting…", unauthenticated: "Logged out" };
  $("conn-status").textContent = labels[status] || status;
  $("conn-status").dataset.status = status;
  if (status === "online") refreshAfterReconnect();
  if (status === "unauthenticated") location.assign("/");
}

async function refreshAfterReconnect() {
  try {
    await loadConversations();
  } catch {
    // the next reconnect tries again
  }
}

// --- names and devices ------------------------------------------------------------------

async function nameOf(userId) {
  if (S.names.has(userId)) return S.names.get(userId);
  const contact = await store.get("contacts", userId);
  if (contact && contact.username) {
    S.names.set(userId, contact.username);
    return contact.username;
  }
  try {
    const user = await api("GET", `/api/users/${encodeURIComponent(userId)}`);
    S.names.set(userId, user.username);
    return user.username;
  } catch {
    return `user ${shortId(userId)}`;
  }
}

async function fetchDevices(userId) {
  const devices = await api("GET", `/api/users/${encodeURIComponent(userId)}/devices`);
  S.devices.set(userId, devices);
  return devices;
}

/**
 * Compare a contact's devices with what we saw before (trust on first use).
 * Returns the ids of devices whose keys changed under a known id: those are refused.
 * Shows "added a new device" / "removed a device" notices and a prominent warning.
 */
async function checkContactDevices(userId, devices, conversationId) {
  if (userId === S.me.id) return new Set();
  const name = await nameOf(userId);
  const known = (await store.get("contacts", userId)) || { username: name, devices: null };
  const seen = {};
  for (const d of devices) seen[d.device_id] = await deviceFingerprint(d.public_key, d.signing_key);
  const refused = new Set();
  if (known.devices === null) {
    await store.put("contacts", userId, { username: name, devices: seen });
    return refused;
  }
  const next = { ...known.devices };
  for (const [deviceId, fp] of Object.entries(seen)) {
    if (!(deviceId in known.devices)) {
      notice(conversationId, `${name} added a new device (${fp}).`, "key-change");
      next[deviceId] = fp;
    } else if (known.devices[deviceId] !== fp) {
      refused.add(deviceId);
      keyWarning(conversationId, `Warning: the keys of ${name}'s device ${deviceId} changed. The server may be trying to read your messages. Messages to and from this device are refused.`);
    }
  }
  for (const deviceId of Object.keys(known.devices)) {
    if (!(deviceId in seen)) {
      notice(conversationId, `${name} removed a device.`, "quiet");
      delete next[deviceId];
    }
  }
  await store.put("contacts", userId, { username: name, devices: next });
  return refused;
}

function notice(conversationId, text, kind) {
  if (conversationId !== S.current) return;
  const item = el("li", { className: `notice ${kind}`, text });
  $("chat-notices").append(item);
}

function keyWarning(conversationId, text) {
  if (conversationId !== S.current) return;
  const box = $("key-warning");
  box.textContent = text;
  box.hidden = false;
}

// --- conversations ----------------------------------------------------------------------

function otherOf(conversation) {
  return conversation.participants.find((id) => id !== S.me.id) || conversation.participants[0];
}

async function loadConversations() {
  const page = await api("GET", `/api/conversations?limit=100`);
  S.order = [];
  for (const conversation of page.conversations) {
    S.conversations.set(conversation.id, conversation);
    S.order.push(conversation.id);
    if (conversation.id === S.current) conversation.unread = 0;
  }
  await renderConversationList();
}

async function renderConversationList() {
  const list = $("conversation-list");
  const items = [];
  for (const id of S.order) {
    const conversation = S.conversations.get(id);
    const other = otherOf(conversation);
    const name = await nameOf(other);
    const button = el("button", { type: "button", className: "conversation", dataset: { conversationId: id } });
    const presence = S.presence.get(other);
    button.append(
      el("span", { className: `dot ${presence && presence.online ? "online" : ""}`, ariaHidden: "true" }),
      el("span", { className: "name", text: name }),
    );
    if (conversation.kind === "reddit") button.append(el("span", { className: "badge reddit", text: "via Reddit" }));
    if (conversation.unread > 0 && id !== S.current) {
      button.append(el("span", { className: "unread", text: String(conversation.unread), ariaLabel: `${conversation.unread} unread` }));
    }
    button.addEventListener("click", () => openConversation(id));
    const item = el("li", {});
    if (id === S.current) item.setAttribute("aria-current", "true");
    item.append(button);
    items.push(item);
  }
  list.replaceChildren(...items);
}

async function startChat(username) {
  $("sidebar-error").textContent = "";
  try {
    const found = await api("GET", `/api/users/by-name/${encodeURIComponent(username)}`);
    const body = found.on_platform && found.id ? { user_id: found.id } : { reddit_username: username };
    const conversation = await api("POST", "/api/conversations", body);
    if (found.id) S.names.set(found.id, found.username);
    S.conversations.set(conversation.id, conversation);
    if (!S.order.includes(conversation.id)) S.order.unshift(conversation.id);
    await renderConversationList();
    await openConversation(conversation.id);
  } catch (err) {
    const text = err.code === "reddit_unavailable"
      ? `${username} is not on OmniNudge, and Reddit is not configured on this server.`
      : `Could not start the chat: ${err.message}`;
    $("sidebar-error").textContent = text;
    if (!$("browse-view").hidden) $("browse-error").textContent = text;
  }
}

async function openConversation(id) {
  const conversation = S.conversations.get(id);
  if (!conversation) return;
  S.current = id;
  S.rendered.clear();
  S.pending.clear();
  S.media.clear();
  S.nextCursor = null;
  conversation.unread = 0;
  const other = otherOf(conversation);
  $("chat-title").textContent = await nameOf(other);
  $("chat-kind").textContent = conversation.kind === "reddit" ? "Reddit chat: not encrypted" : "End-to-end encrypted";
  $("chat-kind").className = conversation.kind === "reddit" ? "badge reddit" : "badge e2e";
  // Pictures and slideshows need the platform: a Reddit chat carries text only.
  show("attach-label", conversation.kind === "platform");
  show("slideshow-button", conversation.kind === "platform");
  $("messages").replaceChildren();
  $("chat-notices").replaceChildren();
  $("key-warning").hidden = true;
  $("typing").textContent = "";
  $("chat-error").textContent = "";
  renderSlideshow();
  renderPresence(other);
  show("browse-view", false);
  show("chat-view", true);
  document.body.classList.add("chat-open");
  await renderConversationList();
  if (conversation.kind === "platform") {
    try {
      await checkContactDevices(other, await fetchDevices(other), id);
    } catch {
      // shown again before the next send
    }
  }
  await loadHistory(false);
  $("composer-input").focus();
  markRead();
}

async function loadHistory(older) {
  const id = S.current;
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (older && S.nextCursor) query.set("before", S.nextCursor);
  const page = await api("GET", `/api/conversations/${encodeURIComponent(id)}/messages?${query}`);
  if (id !== S.current) return;
  S.nextCursor = page.next_cursor;
  show("load-older", Boolean(page.next_cursor));
  const list = $("messages");
  const firstBefore = list.firstElementChild;
  // Newest first from the server: build oldest first.
  const fresh = [];
  for (const message of [...page.messages].reverse()) {
    if (S.rendered.has(message.id)) continue;
    fresh.push(await messageItem(message));
  }
  if (older) {
    for (const item of fresh) list.insertBefore(item, firstBefore);
    if (firstBefore) firstBefore.scrollIntoView({ block: "start" });
  } else {
    list.append(...fresh);
    scrollToEnd();
  }
}

function scrollToEnd() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function markRead() {
  const id = S.current;
  if (!id || document.visibilityState === "hidden") return;
  const items = $("messages").querySelectorAll("li.theirs[data-id]");
  const last = items[items.length - 1];
  if (!last) return;
  const upTo = last.dataset.id;
  if (last.dataset.readSent === "true") return;
  last.dataset.readSent = "true";
  const sent = S.realtime && S.realtime.send({ type: "read", conversation_id: id, up_to: upTo });
  if (!sent) api("POST", `/api/conversations/${encodeURIComponent(id)}/read`, { up_to: upTo }).catch(() => {});
}

// --- messages ---------------------------------------------------------------------------

async function decrypt(message) {
  const senderDevices = S.devices.get(message.sender_id) || [];
  let device = senderDevices.find((d) => d.device_id === message.envelope.sender_device);
  if (!device) {
    // A device we have not seen yet: the list may be out of date.
    device = (await fetchDevices(message.sender_id)).find((d) => d.device_id === message.envelope.sender_device);
  }
  if (!device) throw new EnvelopeRejected("unknown_device", "the sender device is not one of the sender's devices");
  if (message.sender_id !== S.me.id) {
    const refused = await checkContactDevices(message.sender_id, S.devices.get(message.sender_id), message.conversation_id);
    if (refused.has(device.device_id)) throw new EnvelopeRejected("key_changed", "the sender device's keys changed");
  }
  return openEnvelope(message.envelope, {
    conversationId: message.conversation_id,
    clientMsgId: message.client_msg_id,
    myDeviceId: S.device.deviceId,
    myEcdhPrivateKey: S.device.ecdhPrivate,
    senderSigningJwk: device.signing_key,
  });
}

async function messageItem(message) {
  const mine = message.sender_id === S.me.id;
  const item = el("li", { className: `message ${mine ? "mine" : "theirs"}`, dataset: { id: message.id, clientMsgId: message.client_msg_id } });
  S.rendered.set(message.id, item);
  const body = el("div", { className: "body" });
  item.append(body);
  if (message.origin === "reddit" || message.envelope == null) {
    body.append(el("span", { className: "text", text: message.text ?? "" }));
    item.append(el("span", { className: "badge reddit", text: "sent via Reddit — not encrypted" }));
    item.dataset.origin = "reddit";
  } else {
    try {
      const plaintext = await decrypt(message);
      renderPlaintext(body, plaintext, message);
      item.dataset.verified = "true";
    } catch (err) {
      const code = err instanceof EnvelopeRejected ? err.code : "error";
      item.classList.add("rejected");
      item.dataset.rejected = code;
      body.append(el("span", { className: "warning", text: `⚠ This message could not be verified and is not shown (${code}).` }));
    }
  }
  const meta = el("div", { className: "meta" });
  meta.append(el("time", { dateTime: message.sent_at, text: formatTime(message.sent_at) }));
  if (mine) {
    meta.append(el("span", { className: "ticks" }));
    S.statuses.set(message.id, strongest(S.statuses.get(message.id), message.status));
  }
  item.append(meta);
  if (mine) setTicks(item, S.statuses.get(message.id));
  return item;
}

function renderPlaintext(body, plaintext, message) {
  if (plaintext.type === "text") {
    body.append(el("span", { className: "text", text: String(plaintext.body ?? "") }));
  } else if (plaintext.type === "media" && typeof plaintext.media_id === "string") {
    S.media.set(message.id, plaintext.media_id);
    const figure = el("figure", { className: "media" });
    body.append(figure);
    showMedia(figure, plaintext);
  } else {
    body.append(el("span", { className: "text muted", text: `(a ${plaintext.type} message this client cannot show)` }));
  }
}

/** A link from a message payload we may put in the page: ours, or https (an S3 store). */
function safeMediaUrl(value) {
  if (typeof value !== "string" || value === "") return null;
  try {
    const url = new URL(value, location.origin);
    return url.origin === location.origin || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

async function showMedia(figure, plaintext) {
  // The server cannot see which conversation an encrypted message shares a picture in,
  // so it answers fresh links to the uploader (and once a slideshow shared it). Others
  // use the signed links the sender put inside the encrypted message.
  let media = null;
  try {
    media = await api("GET", `/api/media/${encodeURIComponent(plaintext.media_id)}`);
  } catch {
    const url = safeMediaUrl(plaintext.url);
    if (url) media = { url, thumbnail_url: safeMediaUrl(plaintext.thumbnail_url), kind: plaintext.kind };
  }
  if (media) {
    const link = el("a", { href: media.url, target: "_blank", rel: "noopener noreferrer" });
    const image = el("img", { src: media.thumbnail_url || media.url, alt: plaintext.body ? String(plaintext.body) : `Shared ${media.kind === "video" ? "video" : "image"}`, loading: "lazy" });
    image.addEventListener("error", () => figure.replaceChildren(el("span", { className: "muted", text: "(media no longer available)" })), { once: true });
    link.append(image);
    figure.append(link);
  } else {
    figure.append(el("span", { className: "muted", text: "(media no longer available)" }));
  }
  if (plaintext.body) figure.append(el("figcaption", { text: String(plaintext.body) }));
}

const RANK = { accepted: 0, pushed: 1, delivered: 2, read: 3 };

function strongest(a, b) {
  if (!a) return b;
  if (!b) return a;
  return (RANK[b] ?? 0) > (RANK[a] ?? 0) ? b : a;
}

function setTicks(item, status) {
  const ticks = item.querySelector(".ticks");
  if (!ticks) return;
  const shown = status === "read" ? "read" : status === "delivered" ? "delivered" : status === "sending" ? "sending" : status === "failed" ? "failed" : "sent";
  ticks.dataset.status = shown;
  ticks.textContent = { sending: "…", failed: "!", sent: "✓", delivered: "✓✓", read: "✓✓" }[shown];
  ticks.setAttribute("aria-label", { sending: "sending", failed: "not sent", sent: "sent", delivered: "delivered", read: "read" }[shown]);
  ticks.title = ticks.getAttribute("aria-label");
}

async function onMessage(message) {
  const conversation = S.conversations.get(message.conversation_id);
  if (!conversation) {
    // A new conversation: the server's list already counts this message as unread.
    await loadConversations();
  } else {
    conversation.last_message_at = message.sent_at;
    S.order = [message.conversation_id, ...S.order.filter((id) => id !== message.conversation_id)];
  }
  if (message.conversation_id === S.current) {
    const pending = S.pending.get(message.client_msg_id);
    if (pending && message.sender_id === S.me.id) {
      confirmPending(pending, message);
    } else if (!S.rendered.has(message.id)) {
      $("messages").append(await messageItem(message));
      scrollToEnd();
    }
    if (message.sender_id !== S.me.id) {
      $("typing").textContent = "";
      markRead();
    }
  } else if (message.sender_id !== S.me.id && conversation) {
    conversation.unread = (conversation.unread || 0) + 1;
  }
  await renderConversationList();
}

function confirmPending(item, message) {
  S.pending.delete(message.client_msg_id);
  if (S.rendered.has(message.id) && S.rendered.get(message.id) !== item) {
    item.remove();
    return;
  }
  item.dataset.id = message.id;
  S.rendered.set(message.id, item);
  S.statuses.set(message.id, strongest(S.statuses.get(message.id), message.status));
  setTicks(item, S.statuses.get(message.id));
}

async function onFrame(frame) {
  switch (frame.type) {
    case "message":
      await onMessage(frame.message);
      break;
    case "receipt": {
      const status = strongest(S.statuses.get(frame.message_id), frame.status);
      S.statuses.set(frame.message_id, status);
      const item = S.rendered.get(frame.message_id);
      if (item) setTicks(item, status);
      break;
    }
    case "typing":
      if (frame.conversation_id === S.current && frame.user_id !== S.me.id) {
        $("typing").textContent = `${await nameOf(frame.user_id)} is typing…`;
        clearTimeout(S.typingTimer);
        S.typingTimer = setTimeout(() => ($("typing").textContent = ""), TYPING_SHOW_MS);
      }
      break;
    case "presence":
      S.presence.set(frame.user_id, { online: frame.online, last_seen: frame.last_seen });
      if (S.current && otherOf(S.conversations.get(S.current)) === frame.user_id) renderPresence(frame.user_id);
      await renderConversationList();
      break;
    case "slideshow":
      onSlideshow(frame);
      break;
    case "upgrade":
      await loadConversations();
      break;
    case "error":
      if (frame.code === "stale_command" || frame.code === "stale") break;
      if (S.current) $("chat-error").textContent = frame.message;
      break;
    default:
      break;
  }
}

function renderPresence(userId) {
  const presence = S.presence.get(userId);
  const target = $("chat-presence");
  if (!presence || presence.online === null || presence.online === undefined) {
    target.textContent = "";
  } else if (presence.online) {
    target.textContent = "online";
  } else {
    target.textContent = presence.last_seen ? `last seen ${formatTime(presence.last_seen)}` : "offline";
  }
  target.dataset.online = presence && presence.online ? "true" : "false";
}

// --- sending ----------------------------------------------------------------------------

async function sendPlaintext(plaintext, previewText) {
  const id = S.current;
  const conversation = S.conversations.get(id);
  const clientMsgId = crypto.randomUUID();
  const item = el("li", { className: "message mine", dataset: { clientMsgId } });
  const body = el("div", { className: "body" });
  if (plaintext.type === "text") body.append(el("span", { className: "text", text: previewText }));
  else renderPlaintext(body, plaintext, { id: clientMsgId });
  const meta = el("div", { className: "meta" });
  meta.append(el("time", { text: formatTime(new Date().toISOString()) }), el("span", { className: "ticks" }));
  item.append(body, meta);
  setTicks(item, "sending");
  S.pending.set(clientMsgId, item);
  $("messages").append(item);
  scrollToEnd();
  $("chat-error").textContent = "";
  try {
    let answer;
    if (conversation.kind === "reddit") {
      answer = await api("POST", "/api/messages", { conversation_id: id, client_msg_id: clientMsgId, text: previewText });
      item.append(el("span", { className: "badge reddit", text: "sent via Reddit — not encrypted" }));
    } else {
      answer = await sendSealed(conversation, clientMsgId, plaintext);
    }
    if (S.pending.has(clientMsgId)) confirmPending(item, answer.message);
  } catch (err) {
    setTicks(item, "failed");
    $("chat-error").textContent = `Not sent: ${err.message}`;
  }
}

/** Seal for the current devices of both people; on 409 device_mismatch refresh and retry. */
async function sendSealed(conversation, clientMsgId, plaintext) {
  const other = otherOf(conversation);
  for (let attempt = 0; ; attempt++) {
    const [theirs, mine] = await Promise.all([fetchDevices(other), fetchDevices(S.me.id)]);
    const refused = await checkContactDevices(other, theirs, conversation.id);
    if (refused.size > 0) throw new Error("a contact device's keys changed: not sending");
    const recipients = {};
    for (const d of [...theirs, ...mine]) recipients[d.device_id] = d.public_key;
    const envelope = await seal(plaintext, {
      conversationId: conversation.id,
      clientMsgId,
      senderDevice: S.device.deviceId,
      signingKey: S.device.signingPrivate,
      recipients,
    });
    try {
      return await api("POST", "/api/messages", { conversation_id: conversation.id, client_msg_id: clientMsgId, envelope });
    } catch (err) {
      if (err instanceof ApiError && err.code === "device_mismatch" && attempt < 2) continue;
      throw err;
    }
  }
}

async function onComposerSubmit(event) {
  event.preventDefault();
  const input = $("composer-input");
  const text = input.value.trim();
  if (!text || !S.current) return;
  input.value = "";
  await sendPlaintext({ type: "text", body: text }, text);
}

function onComposerInput() {
  const now = Date.now();
  if (!S.current || now - S.lastTypingSent < TYPING_SEND_MS) return;
  if (S.conversations.get(S.current).kind !== "platform") return;
  if (S.realtime && S.realtime.send({ type: "typing", conversation_id: S.current })) S.lastTypingSent = now;
}

async function onMediaChosen() {
  const input = $("media-input");
  const file = input.files && input.files[0];
  input.value = "";
  if (!file || !S.current) return;
  $("chat-error").textContent = "";
  try {
    const form = new FormData();
    form.append("file", file);
    const conversationId = S.current;
    const media = await api("POST", "/api/media", form);
    // Let the other participant fetch fresh links later (the server cannot read the message).
    await api("PUT", `/api/media/${encodeURIComponent(media.id)}/shares/${encodeURIComponent(conversationId)}`);
    await sendPlaintext({
      type: "media",
      media_id: media.id,
      kind: media.kind,
      body: "",
      // Signed links for the recipient (see showMedia), valid until expires_at.
      url: media.url,
      thumbnail_url: media.thumbnail_url,
      expires_at: media.expires_at,
    }, "");
  } catch (err) {
    $("chat-error").textContent = err.status === 404 ? "Media sharing is not available on this server." : `Upload failed: ${err.message}`;
  }
}

// --- slideshow --------------------------------------------------------------------------

function startSlideshow() {
  const mediaIds = [...new Set(S.media.values())];
  if (mediaIds.length === 0) {
    $("chat-error").textContent = "Share some pictures in this conversation first.";
    return;
  }
  S.realtime.send({ type: "slideshow_start", conversation_id: S.current, media_ids: mediaIds });
}

function navigate(action) {
  const show = S.slideshow;
  if (!show) return;
  S.realtime.send({ type: "slideshow_nav", conversation_id: show.conversation_id, action, base_version: show.state.version });
}

async function onSlideshow(frame) {
  const known = S.slideshow && S.slideshow.conversation_id === frame.conversation_id ? S.slideshow.state : null;
  // Frames can overtake each other (live push vs. catch-up): never step back a version.
  if (known && Number.isInteger(known.version) && frame.state.version < known.version) return;
  S.slideshow = { conversation_id: frame.conversation_id, state: frame.state };
  if (frame.conversation_id === S.current) await renderSlideshow();
}

/** Show the shared slideshow of the open conversation, if there is an active one. */
async function renderSlideshow() {
  const shown = S.slideshow;
  const active = Boolean(shown && shown.conversation_id === S.current && shown.state.phase === "active");
  show("slideshow", active);
  if (!active) return;
  const state = shown.state;
  $("slideshow").dataset.version = String(state.version);
  $("slideshow").dataset.index = String(state.index);
  const mediaId = state.media_ids[state.index];
  $("slideshow").dataset.mediaId = mediaId;
  $("slide-counter").textContent = `${state.index + 1} / ${state.media_ids.length}${state.paused ? " (paused)" : ""}`;
  $("slide-pause").textContent = state.paused ? "Resume" : "Pause";
  try {
    const media = await api("GET", `/api/media/${encodeURIComponent(mediaId)}`);
    if (S.slideshow.state.version === state.version) {
      $("slide-image").src = media.url;
      $("slide-image").dataset.mediaId = mediaId;
    }
  } catch {
    $("slide-image").removeAttribute("src");
  }
}

// --- browsing Reddit --------------------------------------------------------------------

async function browse(more) {
  const b = S.browse;
  if (!more) {
    b.subreddit = $("browse-subreddit").value.trim();
    b.sort = $("browse-sort").value;
    b.after = null;
    $("posts").replaceChildren();
  }
  $("browse-error").textContent = "";
  const query = new URLSearchParams({ limit: "25" });
  if (b.after) query.set("after", b.after);
  try {
    const page = await api("GET", `/api/reddit/r/${encodeURIComponent(b.subreddit)}/${b.sort}?${query}`);
    b.after = page.after;
    show("browse-more", Boolean(page.after));
    $("posts").append(...page.posts.map(postItem));
  } catch (err) {
    $("browse-error").textContent = err.status === 404 && err.code === "not_found" && !err.message.includes("subreddit")
      ? "Subreddit browsing is not available on this server."
      : `Could not load r/${b.subreddit}: ${err.message}`;
  }
}

function postItem(post) {
  const item = el("li", { className: "post" });
  if (post.thumbnail && /^https:\/\//.test(post.thumbnail) && !post.over_18) {
    item.append(el("img", { src: post.thumbnail, alt: "", loading: "lazy", className: "thumb" }));
  }
  const text = el("div", {});
  const href = /^https:\/\//.test(post.permalink) ? post.permalink : `https://www.reddit.com${post.permalink}`;
  text.append(el("a", { href, target: "_blank", rel: "noopener noreferrer", text: post.title }));
  const line = el("p", { className: "muted" });
  line.append(el("span", { text: `u/${post.author} · ${post.score} points · ${post.num_comments} comments` }));
  if (post.over_18) line.append(el("span", { className: "badge nsfw", text: "NSFW" }));
  if (post.author_on_platform) line.append(el("span", { className: "badge on-platform", text: "on OmniNudge" }));
  text.append(line);
  if (post.author && post.author !== "[deleted]" && post.author !== S.me.username) {
    const button = el("button", { type: "button", text: `Message u/${post.author}` });
    button.addEventListener("click", () => startChat(post.author));
    text.append(button);
  }
  item.append(text);
  return item;
}

// --- wiring -----------------------------------------------------------------------------

function backToList() {
  S.current = null;
  show("chat-view", false);
  show("browse-view", false);
  document.body.classList.remove("chat-open");
  renderConversationList();
  const first = $("conversation-list").querySelector("button");
  (first || $("new-chat-name")).focus();
}

function bindUi() {
  $("dev-login-form").addEventListener("submit", devLogin);
  $("logout").addEventListener("click", logout);
  $("new-chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("new-chat-name").value.trim();
    $("new-chat-name").value = "";
    if (name) startChat(name);
  });
  $("composer").addEventListener("submit", onComposerSubmit);
  $("composer-input").addEventListener("input", onComposerInput);
  $("media-input").addEventListener("change", onMediaChosen);
  $("load-older").addEventListener("click", () => loadHistory(true));
  $("back-button").addEventListener("click", backToList);
  $("browse-back").addEventListener("click", backToList);
  $("browse-button").addEventListener("click", () => {
    S.current = null;
    show("chat-view", false);
    show("browse-view", true);
    document.body.classList.add("chat-open");
    $("browse-subreddit").focus();
  });
  $("browse-form").addEventListener("submit", (event) => {
    event.preventDefault();
    browse(false);
  });
  $("browse-more").addEventListener("click", () => browse(true));
  $("slideshow-button").addEventListener("click", startSlideshow);
  $("slide-prev").addEventListener("click", () => navigate("prev"));
  $("slide-next").addEventListener("click", () => navigate("next"));
  $("slide-pause").addEventListener("click", () => navigate(S.slideshow && S.slideshow.state.paused ? "resume" : "pause"));
  $("slide-stop").addEventListener("click", () => S.realtime.send({ type: "slideshow_stop", conversation_id: S.current }));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && S.current) backToList();
  });
  document.addEventListener("visibilitychange", markRead);
  window.addEventListener("focus", markRead);
}

start().catch((err) => {
  show("loading", false);
  $("login-error").textContent = `Something went wrong: ${err.message}`;
  show("login-view", true);
});
