-- 0002: media metadata and sharing, invitations, Reddit migration states, Reddit tokens.

CREATE TABLE media (
    id                     TEXT PRIMARY KEY,
    owner_id               TEXT NOT NULL,
    kind                   TEXT NOT NULL,
    content_type           TEXT NOT NULL,
    size                   INTEGER NOT NULL,
    blob_key               TEXT NOT NULL,
    created_at             INTEGER NOT NULL,
    width                  INTEGER,
    height                 INTEGER,
    thumbnail_key          TEXT,
    thumbnail_content_type TEXT
);
CREATE INDEX media_owner ON media (owner_id);

CREATE TABLE media_shares (
    media_id        TEXT NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    PRIMARY KEY (media_id, conversation_id)
);

CREATE TABLE invitations (
    token           TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    inviter_id      TEXT NOT NULL,
    reddit_username TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    accepted_at     INTEGER
);
CREATE INDEX invitations_conversation ON invitations (conversation_id);

-- One migration machine state per conversation, JSON encoded by the core;
-- finished = omninudge_core.migration.is_finished(state), computed when it is saved.
CREATE TABLE migrations (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations (id),
    state           TEXT NOT NULL,
    finished        INTEGER NOT NULL
);
CREATE INDEX migrations_unfinished ON migrations (conversation_id) WHERE finished = 0;

-- Ciphertexts only: the server key that opens them never reaches the database.
CREATE TABLE reddit_tokens (
    user_id                  TEXT PRIMARY KEY,
    refresh_token_ciphertext BLOB NOT NULL,
    scope                    TEXT NOT NULL,
    updated_at               INTEGER NOT NULL,
    access_token_ciphertext  BLOB,
    access_expires_at        INTEGER
);
