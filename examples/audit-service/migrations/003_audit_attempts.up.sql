-- Worker crash recovery: how often an audit was claimed, so one that keeps
-- killing its worker is given up instead of looping forever.
ALTER TABLE audits ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
