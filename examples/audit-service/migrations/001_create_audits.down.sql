DROP INDEX audits_status;
DROP TABLE audits;
