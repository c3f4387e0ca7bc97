-- Agencies using the shared relay, their hosted domains and their relay accounts.
CREATE TABLE mail_agencies (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
-- next_hop: where inbound mail for the domain goes: "host:port", or "mx:<name>" (MX of another name).
CREATE TABLE mail_domains (
    domain TEXT PRIMARY KEY,
    agency TEXT NOT NULL REFERENCES mail_agencies(name) ON DELETE CASCADE,
    next_hop TEXT NOT NULL DEFAULT ''
);
CREATE TABLE mail_accounts (
    username TEXT PRIMARY KEY,
    agency TEXT NOT NULL REFERENCES mail_agencies(name) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
