-- Meetings.  start/end are the first occurrence's, in UTC; rrule is our RFC 5545 subset ('' = single);
-- timezone is the zone the series recurs in (wall-clock).  sequence is the iCalendar SEQUENCE.
CREATE TABLE meetings (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    agenda TEXT NOT NULL DEFAULT '',
    start_at TEXT NOT NULL,
    end_at TEXT NOT NULL,
    timezone TEXT NOT NULL,
    rrule TEXT NOT NULL DEFAULT '',
    chair_unit_id TEXT NOT NULL REFERENCES units(id),
    pin_hash TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'cancelled')),
    sequence INTEGER NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX meetings_start ON meetings(start_at);

-- Sites of a meeting: the chair site and every invited site, with its role.
CREATE TABLE meeting_sites (
    meeting_id TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
    unit_id TEXT NOT NULL REFERENCES units(id),
    role TEXT NOT NULL CHECK (role IN ('chair', 'site', 'observer')),
    PRIMARY KEY (meeting_id, unit_id)
);
CREATE INDEX meeting_sites_unit ON meeting_sites(unit_id);

-- One occurrence of a series moved (new start/end) or cancelled, by its original start (UTC).
CREATE TABLE meeting_exceptions (
    meeting_id TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
    original_start TEXT NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0,
    start_at TEXT,
    end_at TEXT,
    PRIMARY KEY (meeting_id, original_start)
);

-- One join link per (meeting, site).  Re-issuing bumps generation (old tokens stop working).
CREATE TABLE join_links (
    id TEXT PRIMARY KEY,
    meeting_id TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
    unit_id TEXT NOT NULL REFERENCES units(id),
    role TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 1,
    revoked INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    UNIQUE (meeting_id, unit_id)
);
