-- Undoes 001_initial_schema: drops the core tables and their trigger function.
DROP TABLE IF EXISTS audit_log;
DROP TABLE IF EXISTS disputes;
DROP TABLE IF EXISTS contracts;
DROP TABLE IF EXISTS chain_state;
DROP TABLE IF EXISTS validation_results;
DROP TABLE IF EXISTS block_entries;
DROP TABLE IF EXISTS blocks;
DROP TABLE IF EXISTS entries;
DROP FUNCTION IF EXISTS update_updated_at_column();
