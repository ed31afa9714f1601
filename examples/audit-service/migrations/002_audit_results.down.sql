DROP TABLE audit_results;
