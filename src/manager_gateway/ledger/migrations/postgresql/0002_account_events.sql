-- Several nodes: every change of an account gets the account's next version under its row lock,
-- and a row in account_events (the outbox) that other nodes deliver to their sessions in
-- version order. A NOTIFY per batch names the batch; a node that missed some reads them here.
ALTER TABLE accounts ADD COLUMN version bigint NOT NULL DEFAULT 0;
CREATE SEQUENCE event_batches;
CREATE TABLE account_events (
    login bigint NOT NULL,
    version bigint NOT NULL,
    batch bigint NOT NULL,
    event_type integer,  -- NULL: a change with no trade event (AddUser)
    data text,  -- the trade record as trade:event sends it
    account text NOT NULL,  -- the account after the change: a JSON array of its columns
    -- The database's time, not the gateway's: pruning compares it with the database's own.
    created_at double precision NOT NULL DEFAULT extract(epoch FROM now()),
    PRIMARY KEY (login, version)
);
CREATE INDEX account_events_by_batch ON account_events (batch);
CREATE INDEX account_events_by_time ON account_events (created_at);
