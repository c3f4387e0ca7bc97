-- Core: a key/value table for node-wide settings (secrets are kept in the state dir, not here).
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
