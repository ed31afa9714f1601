-- What the worker found: one row per finished audit, the details as JSON.
CREATE TABLE audit_results (
    audit_id     INTEGER PRIMARY KEY REFERENCES audits (id) ON DELETE CASCADE,
    http_status  INTEGER,
    duration_ms  INTEGER NOT NULL,
    error        TEXT,
    details      TEXT    NOT NULL DEFAULT '{}'
);
