-- Version 2: per-user event streams, media, invitations, migrations, Reddit tokens,
-- and the indexes for listing and reporting.

-- One row per user holding the last assigned seq. Appends bump it with
-- INSERT .. ON CONFLICT DO UPDATE .. RETURNING: the row lock held until commit makes
-- seq gap-free and strictly increasing per user, in commit order.
CREATE TABLE user_streams (
    user_id  text COLLATE "C" PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq >= 0)
);

CREATE TABLE events (
    user_id    text COLLATE "C" NOT NULL,
    seq        bigint NOT NULL,
    kind       text NOT NULL,
    message_id text COLLATE "C" REFERENCES messages (id) ON DELETE CASCADE,
    payload    jsonb,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, seq)
);

CREATE TABLE media (
    id                     text COLLATE "C" PRIMARY KEY,
    owner_id               text COLLATE "C" NOT NULL,
    kind                   text NOT NULL CHECK (kind IN ('image', 'video')),
    content_type           text NOT NULL,
    size                   bigint NOT NULL,
    blob_key               text NOT NULL,
    created_at             timestamptz NOT NULL,
    width                  integer,
    height                 integer,
    thumbnail_key          text,
    thumbnail_content_type text
);
CREATE INDEX media_owner_idx ON media (owner_id);

CREATE TABLE media_shares (
    media_id        text COLLATE "C" NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    conversation_id text COLLATE "C" NOT NULL REFERENCES conversations (id),
    PRIMARY KEY (media_id, conversation_id)
);

CREATE TABLE invitations (
    token           text PRIMARY KEY,
    conversation_id text COLLATE "C" NOT NULL,
    inviter_id      text COLLATE "C" NOT NULL,
    reddit_username text NOT NULL,
    created_at      timestamptz NOT NULL,
    accepted_at     timestamptz
);

-- Reddit -> platform migration machine states, encoded by the core codec.
-- finished = omninudge_core.migration.is_finished(state), computed when it is saved.
CREATE TABLE migrations (
    conversation_id text COLLATE "C" PRIMARY KEY REFERENCES conversations (id),
    state           jsonb NOT NULL,
    finished        boolean NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT statement_timestamp()
);
CREATE INDEX migrations_unfinished_idx ON migrations (conversation_id) WHERE NOT finished;

-- Ciphertexts only: the server key that encrypts them never reaches the database.
CREATE TABLE reddit_tokens (
    user_id                  text COLLATE "C" PRIMARY KEY,
    refresh_token_ciphertext bytea NOT NULL,
    scope                    text NOT NULL,
    updated_at               timestamptz NOT NULL,
    access_token_ciphertext  bytea,
    access_expires_at        timestamptz
);

-- Reporting and listing indexes.
CREATE INDEX messages_sent_at_idx ON messages (sent_at DESC);
CREATE INDEX users_username_idx ON users (username);
