-- 0001: people and messaging. Times are INTEGER microseconds since the Unix epoch (UTC),
-- so they round-trip exactly and sort numerically; JSON columns hold TEXT.

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    username       TEXT NOT NULL,
    -- Reddit usernames are case-insensitive: uniqueness is on the lower-cased copy.
    username_lower TEXT NOT NULL,
    reddit_id      TEXT,
    on_platform    INTEGER NOT NULL,
    settings       TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_username ON users (username_lower);
CREATE UNIQUE INDEX users_reddit_id ON users (reddit_id);

CREATE TABLE devices (
    device_id   TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    signing_key TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX devices_user ON devices (user_id, created_at, device_id);

CREATE TABLE blocks (
    blocker_id TEXT NOT NULL,
    blocked_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);
CREATE INDEX blocks_blocked ON blocks (blocked_id);

CREATE TABLE conversations (
    id              TEXT PRIMARY KEY,
    -- The sorted participant pair (models.pair_key): one conversation per pair.
    user_a          TEXT NOT NULL,
    user_b          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    upgrade_state   TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    last_message_at INTEGER
);
CREATE UNIQUE INDEX conversations_pair ON conversations (user_a, user_b);
CREATE INDEX conversations_user_b ON conversations (user_b);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    sender_id       TEXT NOT NULL,
    client_msg_id   TEXT NOT NULL,
    origin          TEXT NOT NULL,
    sent_at         INTEGER NOT NULL,
    envelope        TEXT,
    text            TEXT,
    reddit_fullname TEXT,
    UNIQUE (sender_id, client_msg_id),
    UNIQUE (conversation_id, reddit_fullname)
);
-- History pages walk (sent_at, id) backwards within one conversation.
CREATE INDEX messages_conversation ON messages (conversation_id, sent_at, id);

CREATE TABLE deliveries (
    message_id   TEXT NOT NULL REFERENCES messages (id),
    recipient_id TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    status       TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (message_id, recipient_id, device_id)
);

CREATE TABLE read_marks (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    user_id         TEXT NOT NULL,
    sent_at         INTEGER NOT NULL,
    message_id      TEXT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

-- The per-user durable event stream: user_streams holds the last seq handed out, so
-- the next one is last_seq + 1 inside the same write transaction (gap-free).
CREATE TABLE user_streams (
    user_id  TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
);

CREATE TABLE events (
    user_id    TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    message_id TEXT REFERENCES messages (id),
    payload    TEXT,
    PRIMARY KEY (user_id, seq)
);
