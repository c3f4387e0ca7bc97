-- The time a meeting's occurrences cover: from the earliest start to the latest end (UTC), with
-- recurrence expanded and exceptions applied (computed by web.schedule.span when a meeting is
-- written).  Calendars and lists select by it in SQL instead of loading every meeting.
-- Rows written before this migration get the widest span (always a candidate) until the web
-- service recomputes them at start-up.
ALTER TABLE meetings ADD COLUMN span_start TEXT NOT NULL DEFAULT '0001-01-01T00:00:00Z';
ALTER TABLE meetings ADD COLUMN span_end TEXT NOT NULL DEFAULT '9999-12-31T23:59:59Z';
CREATE INDEX meetings_span_end ON meetings(span_end, id);
CREATE INDEX meetings_span_start ON meetings(span_start, id);
