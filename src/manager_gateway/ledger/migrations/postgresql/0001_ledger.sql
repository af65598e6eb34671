-- The ledger on PostgreSQL: the same tables as the SQLite engine, money as numeric (never a
-- float), and balances that cannot go below zero even if every check above the database failed.
CREATE TABLE accounts (
    login bigint PRIMARY KEY,
    grp text NOT NULL,
    name text NOT NULL,
    email text NOT NULL,
    password_hash text NOT NULL,
    leverage integer NOT NULL,
    enable integer NOT NULL,
    currency text NOT NULL,
    digits integer NOT NULL,
    balance numeric NOT NULL CHECK (balance >= 0),
    credit numeric NOT NULL CHECK (credit >= 0),
    registration_time bigint NOT NULL
);
CREATE TABLE records (
    ord bigint NOT NULL,
    version integer NOT NULL,
    login bigint NOT NULL,
    cmd integer NOT NULL,
    state integer NOT NULL,
    profit numeric NOT NULL,
    comment text NOT NULL,
    open_time bigint NOT NULL,
    close_time bigint NOT NULL,
    update_time bigint NOT NULL,
    PRIMARY KEY (ord, version)
);
CREATE TABLE idempotency (
    subject text NOT NULL,
    ext_id text NOT NULL,
    command text NOT NULL,
    digest text NOT NULL,
    outcome text NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (subject, ext_id)
);
CREATE TABLE settlement_journal (
    company bigint NOT NULL,
    space text NOT NULL,
    number text NOT NULL,
    kind text NOT NULL,
    fingerprint text NOT NULL,
    code text NOT NULL,
    login bigint,
    user_name text NOT NULL,
    finance_order bigint,
    amount text NOT NULL,
    reverses text,
    cancelled_by text,
    answer text NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (company, space, number)
);
CREATE INDEX settlement_journal_by_time ON settlement_journal (created_at);
CREATE INDEX records_by_login ON records (login, ord);
CREATE INDEX records_by_open_time ON records (open_time);
CREATE INDEX idempotency_by_time ON idempotency (created_at);
-- New numbers for every node at once: a sequence hands each batch its own without a lock, so
-- order numbers may have gaps (one reserved per operation that might make a record).
CREATE SEQUENCE order_numbers START 1;
-- The first automatic login is 1000, as on SQLite.
CREATE SEQUENCE login_numbers START 1000;
