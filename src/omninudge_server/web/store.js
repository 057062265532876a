// IndexedDB: the only place the client keeps anything between visits.
//
// keys      user id -> {deviceId, ecdhPrivate, signingPrivate (non-extractable CryptoKeys),
//                       publicKey, signingKey (public JWKs)}
// contacts  user id -> {username, devices: {deviceId: fingerprint}} (trust on first use)
// stream    user id -> last acknowledged seq (resume_from after a reload)
// Nothing secret goes to localStorage: CryptoKeys are structured-cloned into IndexedDB as
// opaque handles, and the session token lives in an HttpOnly cookie.

const DB_NAME = "omninudge";
const STORES = ["keys", "contacts", "stream"];
let opening = null;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export function openDb() {
  if (!opening) {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => {
      for (const name of STORES) {
        if (!req.result.objectStoreNames.contains(name)) req.result.createObjectStore(name);
      }
    };
    opening = request(req);
  }
  return opening;
}

export async function get(store, key) {
  const db = await openDb();
  return request(db.transaction(store, "readonly").objectStore(store).get(key));
}

export async function put(store, key, value) {
  const db = await openDb();
  const tx = db.transaction(store, "readwrite");
  tx.objectStore(store).put(value, key);
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}
