-- Version 1: people, conversations and messages.
--
-- Ids are opaque strings made by the shell. They use COLLATE "C" so that ordering and
-- keyset comparisons agree with Python's code-point order whatever the database locale.

CREATE TABLE users (
    id          text COLLATE "C" PRIMARY KEY,
    username    text NOT NULL,
    reddit_id   text,
    on_platform boolean NOT NULL DEFAULT true,
    settings    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL,
    CONSTRAINT users_reddit_id_key UNIQUE (reddit_id)
);
-- Reddit usernames are case-insensitive: one account per lower-cased name.
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));

CREATE TABLE devices (
    device_id   text COLLATE "C" PRIMARY KEY,
    user_id     text COLLATE "C" NOT NULL,
    public_key  jsonb NOT NULL,
    signing_key jsonb NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX devices_user_idx ON devices (user_id, created_at, device_id);

CREATE TABLE blocks (
    blocker_id text COLLATE "C" NOT NULL,
    blocked_id text COLLATE "C" NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);

CREATE TABLE conversations (
    id              text COLLATE "C" PRIMARY KEY,
    -- the canonical pair: user_a <= user_b in code-point order (models.pair_key)
    user_a          text COLLATE "C" NOT NULL,
    user_b          text COLLATE "C" NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('platform', 'reddit')),
    upgrade_state   text NOT NULL,
    created_at      timestamptz NOT NULL,
    last_message_at timestamptz,
    CONSTRAINT conversations_pair_key UNIQUE (user_a, user_b),
    CONSTRAINT conversations_pair_sorted CHECK (user_a <= user_b)
);
CREATE INDEX conversations_user_b_idx ON conversations (user_b);
CREATE INDEX conversations_last_message_at_idx ON conversations (last_message_at DESC NULLS LAST);

CREATE TABLE messages (
    id              text COLLATE "C" PRIMARY KEY,
    conversation_id text COLLATE "C" NOT NULL REFERENCES conversations (id),
    sender_id       text COLLATE "C" NOT NULL,
    client_msg_id   text NOT NULL,
    origin          text NOT NULL CHECK (origin IN ('platform', 'reddit')),
    sent_at         timestamptz NOT NULL,
    envelope        jsonb,
    body            text,
    reddit_fullname text,
    -- a replayed send is recognised by its client_msg_id (API.md: idempotent send)
    CONSTRAINT messages_sender_client_msg_id_key UNIQUE (sender_id, client_msg_id),
    -- an import never duplicates a Reddit message (t4_ fullname)
    CONSTRAINT messages_conversation_reddit_fullname_key UNIQUE (conversation_id, reddit_fullname)
);
-- history pages: newest first by (sent_at, id) within a conversation
CREATE INDEX messages_conversation_history_idx ON messages (conversation_id, sent_at DESC, id DESC);

CREATE TABLE deliveries (
    message_id   text COLLATE "C" NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    device_id    text COLLATE "C" NOT NULL,
    recipient_id text COLLATE "C" NOT NULL,
    status       text NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (message_id, recipient_id, device_id)
);
CREATE INDEX deliveries_recipient_status_idx ON deliveries (recipient_id, status);

CREATE TABLE read_marks (
    conversation_id text COLLATE "C" NOT NULL REFERENCES conversations (id),
    user_id         text COLLATE "C" NOT NULL,
    message_id      text COLLATE "C" NOT NULL,
    sent_at         timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
