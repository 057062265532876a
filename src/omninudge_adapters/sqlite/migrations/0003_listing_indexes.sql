-- 0003: what the listings and delivery sweeps need.
-- activity_at = coalesce(last_message_at, created_at): the conversation list sorts on it
-- (newest activity first), so it is a column with an index rather than an expression.

ALTER TABLE conversations ADD COLUMN activity_at INTEGER NOT NULL DEFAULT 0;
UPDATE conversations SET activity_at = coalesce(last_message_at, created_at);
CREATE INDEX conversations_a_activity ON conversations (user_a, activity_at, id);
CREATE INDEX conversations_b_activity ON conversations (user_b, activity_at, id);
-- Superseded by conversations_b_activity (same leading column).
DROP INDEX conversations_user_b;
CREATE INDEX conversations_last_message_at ON conversations (last_message_at DESC);

CREATE INDEX messages_sent_at ON messages (sent_at DESC);
-- "messages(recipient, delivered)": undelivered work per recipient.
CREATE INDEX deliveries_recipient_status ON deliveries (recipient_id, status);
CREATE INDEX events_message ON events (message_id);
