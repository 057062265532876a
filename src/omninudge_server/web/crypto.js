// The v1 end-to-end envelope (API.md "E2E envelope (v1)", docs/encryption.md) on Web Crypto.
//
// Byte for byte the same construction as omninudge_adapters.crypto: a fresh AES-256-GCM
// content key per message (AAD = conversation_id "|" client_msg_id), wrapped for every
// device under HKDF-SHA-256(ECDH(ephemeral, device)), signed with ECDSA P-256 (raw r||s).
// Private keys are generated non-extractable: they can be used and stored as CryptoKey
// objects in IndexedDB, never read out.

export const VERSION = 1;
export const ALG = "ECDH-P256+HKDF-SHA256+A256GCM+ES256";
const SIG_PREFIX = "omninudge/v1/sig";
const KEK_INFO_PREFIX = "omninudge/v1/kek/";
const FP_PREFIX = "omninudge/v1/fp";
const ECDH = { name: "ECDH", namedCurve: "P-256" };
const ECDSA = { name: "ECDSA", namedCurve: "P-256" };
const ECDSA_SHA256 = { name: "ECDSA", hash: "SHA-256" };

const subtle = globalThis.crypto.subtle;
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Why an envelope was refused; `code` is one of docs/encryption.md "Opening". */
export class EnvelopeRejected extends Error {
  constructor(code, message) {
    super(message);
    this.name = "EnvelopeRejected";
    this.code = code;
  }
}

// --- base64url, strict ------------------------------------------------------------------

const B64URL = /^[A-Za-z0-9_-]*$/;

export function b64u(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let binary = "";
  for (let i = 0; i < view.length; i += 0x8000) {
    binary += String.fromCharCode(...view.subarray(i, i + 0x8000));
  }
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Decode canonical unpadded base64url; throws for anything else (one spelling per value). */
export function unb64u(text) {
  if (typeof text !== "string" || !B64URL.test(text) || text.length % 4 === 1) {
    throw new Error("not unpadded base64url");
  }
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  if (b64u(bytes) !== text) throw new Error("non-canonical base64url");
  return bytes;
}

// --- ordering and the signed bytes ------------------------------------------------------

/** Compare by Unicode code point (Python's str order), not by UTF-16 code unit. */
export function compareCodePoints(a, b) {
  const left = Array.from(a);
  const right = Array.from(b);
  const n = Math.min(left.length, right.length);
  for (let i = 0; i < n; i++) {
    const x = left[i].codePointAt(0);
    const y = right[i].codePointAt(0);
    if (x !== y) return x < y ? -1 : 1;
  }
  return left.length - right.length;
}

export function aadFor(conversationId, clientMsgId) {
  return utf8.encode(`${conversationId}|${clientMsgId}`);
}

/** The exact bytes `sig` covers, from the envelope's own base64url strings. */
export function signatureInput(conversationId, clientMsgId, envelope) {
  const head = [
    SIG_PREFIX,
    conversationId,
    clientMsgId,
    envelope.sender_device,
    envelope.epk,
    envelope.iv,
    envelope.ct,
  ].join("|");
  const entries = [...envelope.keys].sort((a, b) => compareCodePoints(a.device, b.device));
  const tail = entries.map((e) => `|${e.device}:${e.iv}:${e.wk}`).join("");
  return utf8.encode(head + tail);
}

/** Compact JSON in key order, UTF-8: what Python's json.dumps(separators=(",", ":"),
 * ensure_ascii=False) writes for the same object. */
export function encodePlaintext(plaintext) {
  return utf8.encode(JSON.stringify(plaintext));
}

function checkId(name, value) {
  if (typeof value !== "string" || value === "" || value.includes("|")) {
    throw new Error(`${name} must be non-empty and must not contain '|'`);
  }
}

// --- keys -------------------------------------------------------------------------------

function publicJwk(jwk) {
  return { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y };
}

/** A new device: two non-extractable private keys and their public JWKs. */
export async function generateDeviceKeys() {
  const ecdh = await subtle.generateKey(ECDH, false, ["deriveBits"]);
  const signing = await subtle.generateKey(ECDSA, false, ["sign", "verify"]);
  return {
    ecdhPrivate: ecdh.privateKey,
    signingPrivate: signing.privateKey,
    publicKey: publicJwk(await subtle.exportKey("jwk", ecdh.publicKey)),
    signingKey: publicJwk(await subtle.exportKey("jwk", signing.publicKey)),
  };
}

function checkJwk(jwk) {
  if (!jwk || jwk.kty !== "EC" || jwk.crv !== "P-256") throw new Error("not an EC P-256 JWK");
  if (unb64u(jwk.x).length !== 32 || unb64u(jwk.y).length !== 32) {
    throw new Error("JWK coordinates must be 32 bytes");
  }
  return publicJwk(jwk);
}

export async function importEcdhPublic(jwk) {
  return subtle.importKey("jwk", checkJwk(jwk), ECDH, true, []);
}

export async function importVerifyKey(jwk) {
  return subtle.importKey("jwk", checkJwk(jwk), ECDSA, true, ["verify"]);
}

/** Import a private JWK (with `d`) as a non-extractable key (test vectors, key import). */
export async function importPrivateJwk(jwk, usage) {
  const params = usage === "ecdh" ? ECDH : ECDSA;
  const uses = usage === "ecdh" ? ["deriveBits"] : ["sign"];
  return subtle.importKey("jwk", { ...jwk, ext: false, key_ops: uses }, params, false, uses);
}

/** "5ea6 66d6 …": SHA-256 over the canonical coordinates, first 16 bytes (encryption.md). */
export async function deviceFingerprint(publicKey, signingKey) {
  const a = checkJwk(publicKey);
  const b = checkJwk(signingKey);
  const text = [FP_PREFIX, a.x, a.y, b.x, b.y].join("|");
  const digest = new Uint8Array(await subtle.digest("SHA-256", utf8.encode(text)));
  const hex = Array.from(digest.subarray(0, 16), (v) => v.toString(16).padStart(2, "0")).join("");
  return hex.match(/.{4}/g).join(" ");
}

// --- primitives -------------------------------------------------------------------------

export async function ecdhSharedSecret(privateKey, publicKey) {
  return new Uint8Array(await subtle.deriveBits({ name: "ECDH", public: publicKey }, privateKey, 256));
}

export async function deriveKek(sharedSecret, deviceId) {
  const ikm = await subtle.importKey("raw", sharedSecret, "HKDF", false, ["deriveBits"]);
  const bits = await subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: utf8.encode(KEK_INFO_PREFIX + deviceId) },
    ikm,
    256,
  );
  return new Uint8Array(bits);
}

async function aesKey(raw, uses) {
  return subtle.importKey("raw", raw, { name: "AES-GCM" }, false, uses);
}

async function gcmEncrypt(raw, iv, data, aad) {
  const params = aad ? { name: "AES-GCM", iv, additionalData: aad } : { name: "AES-GCM", iv };
  return new Uint8Array(await subtle.encrypt(params, await aesKey(raw, ["encrypt"]), data));
}

async function gcmDecrypt(raw, iv, data, aad) {
  const params = aad ? { name: "AES-GCM", iv, additionalData: aad } : { name: "AES-GCM", iv };
  return new Uint8Array(await subtle.decrypt(params, await aesKey(raw, ["decrypt"]), data));
}

function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

// --- seal -------------------------------------------------------------------------------

/**
 * Encrypt `plaintext` (an object, e.g. {type: "text", body}) for every device of
 * `recipients` ({deviceId: public ECDH JWK}: the recipient's AND the sender's devices)
 * and sign it with `signingKey` (the sender device's private ECDSA CryptoKey).
 *
 * `options.randomBytes(n)` and `options.ephemeral` ({privateKey, publicRaw}) exist for the
 * known-answer vector only; randomness is drawn in Python's order: content key (32),
 * content iv (12), then one iv (12) per device in ascending code-point order.
 * Throws Error for no recipients, an id containing "|" or a bad JWK.
 */
export async function seal(plaintext, { conversationId, clientMsgId, senderDevice, signingKey, recipients }, options = {}) {
  const draw = options.randomBytes || randomBytes;
  const deviceIds = Object.keys(recipients).sort(compareCodePoints);
  if (deviceIds.length === 0) throw new Error("an envelope needs at least one recipient device");
  checkId("conversation_id", conversationId);
  checkId("client_msg_id", clientMsgId);
  checkId("sender_device", senderDevice);
  deviceIds.forEach((d) => checkId("recipient device id", d));
  const devicePublic = {};
  for (const d of deviceIds) devicePublic[d] = await importEcdhPublic(recipients[d]);

  const contentKey = draw(32);
  const iv = draw(12);
  const ct = await gcmEncrypt(contentKey, iv, encodePlaintext(plaintext), aadFor(conversationId, clientMsgId));
  let ephemeral = options.ephemeral;
  if (!ephemeral) {
    const pair = await subtle.generateKey(ECDH, false, ["deriveBits"]);
    ephemeral = { privateKey: pair.privateKey, publicRaw: new Uint8Array(await subtle.exportKey("raw", pair.publicKey)) };
  }
  const keys = [];
  for (const d of deviceIds) {
    const kek = await deriveKek(await ecdhSharedSecret(ephemeral.privateKey, devicePublic[d]), d);
    const wrapIv = draw(12);
    keys.push({ device: d, iv: b64u(wrapIv), wk: b64u(await gcmEncrypt(kek, wrapIv, contentKey, null)) });
  }
  const envelope = {
    v: VERSION,
    alg: ALG,
    sender_device: senderDevice,
    epk: b64u(ephemeral.publicRaw),
    iv: b64u(iv),
    ct: b64u(ct),
    keys,
  };
  const sig = await subtle.sign(ECDSA_SHA256, signingKey, signatureInput(conversationId, clientMsgId, envelope));
  envelope.sig = b64u(new Uint8Array(sig));
  return envelope;
}

// --- open -------------------------------------------------------------------------------

function field(object, name, size, minimum = 0) {
  const value = object[name];
  if (typeof value !== "string") throw new EnvelopeRejected("malformed_envelope", `${name} must be a string`);
  let raw;
  try {
    raw = unb64u(value);
  } catch {
    throw new EnvelopeRejected("malformed_envelope", `${name} is not unpadded base64url`);
  }
  if ((size !== null && raw.length !== size) || raw.length < minimum) {
    throw new EnvelopeRejected("malformed_envelope", `${name} has the wrong length`);
  }
  return raw;
}

function validId(value) {
  return typeof value === "string" && value !== "" && !value.includes("|");
}

async function parse(envelope) {
  if (!envelope || typeof envelope !== "object" || Array.isArray(envelope)) {
    throw new EnvelopeRejected("malformed_envelope", "the envelope must be a JSON object");
  }
  if (envelope.v !== VERSION || !Number.isInteger(envelope.v) || envelope.alg !== ALG) {
    throw new EnvelopeRejected("unsupported_envelope", `expected v ${VERSION} and alg ${ALG}`);
  }
  if (!validId(envelope.sender_device)) {
    throw new EnvelopeRejected("malformed_envelope", "sender_device must be a device id without '|'");
  }
  const epk = field(envelope, "epk", 65);
  if (epk[0] !== 0x04) throw new EnvelopeRejected("malformed_envelope", "epk must be an uncompressed point");
  let ephemeral;
  try {
    ephemeral = await subtle.importKey("raw", epk, ECDH, true, []);
  } catch {
    throw new EnvelopeRejected("malformed_envelope", "epk is not a point on P-256");
  }
  const decoded = {
    ephemeral,
    iv: field(envelope, "iv", 12),
    ct: field(envelope, "ct", null, 16),
    sig: field(envelope, "sig", 64),
    keys: new Map(),
  };
  if (!Array.isArray(envelope.keys) || envelope.keys.length === 0) {
    throw new EnvelopeRejected("malformed_envelope", "keys must be a non-empty list");
  }
  for (const entry of envelope.keys) {
    if (!entry || typeof entry !== "object") throw new EnvelopeRejected("malformed_envelope", "bad keys entry");
    if (!validId(entry.device)) throw new EnvelopeRejected("malformed_envelope", "keys[].device is not a device id");
    if (decoded.keys.has(entry.device)) throw new EnvelopeRejected("malformed_envelope", "a device appears twice in keys");
    decoded.keys.set(entry.device, { iv: field(entry, "iv", 12), wk: field(entry, "wk", 48) });
  }
  return decoded;
}

/**
 * Verify and decrypt an envelope addressed (among others) to `myDeviceId`.
 * `senderSigningJwk` is the signing_key of envelope.sender_device, looked up among the
 * devices of the message's sender user. Returns the plaintext object.
 * Throws EnvelopeRejected (unsupported_envelope, malformed_envelope, bad_signature,
 * not_a_recipient, decrypt_failed, malformed_plaintext); nothing is decrypted before
 * the signature verifies.
 */
export async function openEnvelope(envelope, { conversationId, clientMsgId, myDeviceId, myEcdhPrivateKey, senderSigningJwk }) {
  const decoded = await parse(envelope);
  if (!validId(conversationId) || !validId(clientMsgId)) {
    throw new EnvelopeRejected("malformed_envelope", "ids must be non-empty and must not contain '|'");
  }
  let verifyKey;
  try {
    verifyKey = await importVerifyKey(senderSigningJwk);
  } catch {
    throw new EnvelopeRejected("bad_signature", "the sender device's signing key is not valid");
  }
  const ok = await subtle.verify(ECDSA_SHA256, verifyKey, decoded.sig, signatureInput(conversationId, clientMsgId, envelope));
  if (!ok) throw new EnvelopeRejected("bad_signature", "the signature does not verify");
  const mine = decoded.keys.get(myDeviceId);
  if (!mine) throw new EnvelopeRejected("not_a_recipient", "this device is not among the envelope's keys");
  let plaintext;
  try {
    const kek = await deriveKek(await ecdhSharedSecret(myEcdhPrivateKey, decoded.ephemeral), myDeviceId);
    const contentKey = await gcmDecrypt(kek, mine.iv, mine.wk, null);
    plaintext = await gcmDecrypt(contentKey, decoded.iv, decoded.ct, aadFor(conversationId, clientMsgId));
  } catch {
    throw new EnvelopeRejected("decrypt_failed", "the envelope does not decrypt");
  }
  let value;
  try {
    value = JSON.parse(fromUtf8.decode(plaintext));
  } catch {
    throw new EnvelopeRejected("malformed_plaintext", "the plaintext is not UTF-8 JSON");
  }
  if (!value || typeof value !== "object" || Array.isArray(value) || typeof value.type !== "string") {
    throw new EnvelopeRejected("malformed_plaintext", "the plaintext must be an object with a string type");
  }
  return value;
}
