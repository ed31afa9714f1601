-- The audit queue: one row per URL to audit, picked up by the worker.
CREATE TABLE audits (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    url         TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'completed', 'partial', 'blocked', 'failed')),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    started_at  TEXT,
    finished_at TEXT
);
CREATE INDEX audits_status ON audits (status, id);
