-- The ledger as gateway 0.1.0 created it, before migrations were versioned: every statement is
-- IF NOT EXISTS, so on a ledger that version made this only records that it is at 0001.
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (
    login INTEGER PRIMARY KEY,
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    leverage INTEGER NOT NULL,
    enable INTEGER NOT NULL,
    currency TEXT NOT NULL,
    digits INTEGER NOT NULL,
    balance TEXT NOT NULL,
    credit TEXT NOT NULL,
    registration_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    ord INTEGER NOT NULL,
    version INTEGER NOT NULL,
    login INTEGER NOT NULL,
    cmd INTEGER NOT NULL,
    state INTEGER NOT NULL,
    profit TEXT NOT NULL,
    comment TEXT NOT NULL,
    open_time INTEGER NOT NULL,
    close_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (ord, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    subject TEXT NOT NULL,
    ext_id TEXT NOT NULL,
    command TEXT NOT NULL,
    digest TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (subject, ext_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settlement_journal (
    company INTEGER NOT NULL,
    space TEXT NOT NULL,
    number TEXT NOT NULL,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    code TEXT NOT NULL,
    login INTEGER,
    user_name TEXT NOT NULL,
    finance_order INTEGER,
    amount TEXT NOT NULL,
    reverses TEXT,
    cancelled_by TEXT,
    answer TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (company, space, number)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS settlement_journal_by_time ON settlement_journal (created_at);
CREATE INDEX IF NOT EXISTS records_by_login ON records (login, ord);
CREATE INDEX IF NOT EXISTS records_by_open_time ON records (open_time);
CREATE INDEX IF NOT EXISTS idempotency_by_time ON idempotency (created_at);
