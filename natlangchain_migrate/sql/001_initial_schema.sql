-- 001_initial_schema: NatLangChain's core tables.
-- Safe to run twice: every object is created IF NOT EXISTS or OR REPLACE.
-- The runner records this migration in schema_migrations; this file does not.

CREATE TABLE IF NOT EXISTS entries (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    entry_id    varchar(64) NOT NULL UNIQUE,
    content     text NOT NULL,
    author      varchar(255) NOT NULL,
    intent      varchar(100),
    "timestamp" timestamptz DEFAULT CURRENT_TIMESTAMP,
    signature   text,
    metadata    jsonb DEFAULT '{}'::jsonb,
    created_at  timestamptz DEFAULT CURRENT_TIMESTAMP,
    updated_at  timestamptz DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS blocks (
    id            serial PRIMARY KEY,
    block_index   integer NOT NULL UNIQUE,
    "timestamp"   timestamptz NOT NULL,
    previous_hash varchar(64) NOT NULL,
    hash          varchar(64) NOT NULL UNIQUE,
    nonce         integer DEFAULT 0,
    difficulty    integer DEFAULT 4,
    created_at    timestamptz DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS block_entries (
    id       serial PRIMARY KEY,
    block_id integer NOT NULL REFERENCES blocks(id) ON DELETE CASCADE,
    entry_id uuid NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    position integer NOT NULL,
    UNIQUE (block_id, entry_id),
    UNIQUE (block_id, position)
);

CREATE TABLE IF NOT EXISTS validation_results (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    entry_id           uuid NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    validator_type     varchar(50) NOT NULL,
    is_valid           boolean NOT NULL,
    confidence         numeric(5,4) CHECK (confidence >= 0 AND confidence <= 1),
    reasoning          text,
    validator_metadata jsonb DEFAULT '{}'::jsonb,
    validated_at       timestamptz DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS chain_state (
    id              integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    chain_id        varchar(64) NOT NULL,
    last_block_hash varchar(64),
    block_count     integer DEFAULT 0,
    entry_count     integer DEFAULT 0,
    difficulty      integer DEFAULT 4,
    updated_at      timestamptz DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS contracts (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    contract_id varchar(64) NOT NULL UNIQUE,
    title       varchar(500),
    content     text NOT NULL,
    parties     jsonb DEFAULT '[]'::jsonb,
    terms       jsonb DEFAULT '[]'::jsonb,
    status      varchar(50) DEFAULT 'draft',
    created_by  varchar(255) NOT NULL,
    created_at  timestamptz DEFAULT CURRENT_TIMESTAMP,
    updated_at  timestamptz DEFAULT CURRENT_TIMESTAMP,
    metadata    jsonb DEFAULT '{}'::jsonb
);

CREATE TABLE IF NOT EXISTS disputes (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    dispute_id  varchar(64) NOT NULL UNIQUE,
    contract_id uuid REFERENCES contracts(id) ON DELETE SET NULL,
    entry_id    uuid REFERENCES entries(id) ON DELETE SET NULL,
    claimant    varchar(255) NOT NULL,
    respondent  varchar(255),
    claim       text NOT NULL,
    status      varchar(50) DEFAULT 'open',
    resolution  text,
    resolved_by varchar(255),
    created_at  timestamptz DEFAULT CURRENT_TIMESTAMP,
    resolved_at timestamptz,
    metadata    jsonb DEFAULT '{}'::jsonb
);

CREATE TABLE IF NOT EXISTS audit_log (
    id          bigserial PRIMARY KEY,
    event_type  varchar(100) NOT NULL,
    entity_type varchar(50) NOT NULL,
    entity_id   varchar(64) NOT NULL,
    actor       varchar(255),
    action      varchar(50) NOT NULL,
    old_value   jsonb,
    new_value   jsonb,
    ip_address  inet,
    user_agent  text,
    created_at  timestamptz DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_entries_author ON entries (author);
CREATE INDEX IF NOT EXISTS idx_entries_intent ON entries (intent);
CREATE INDEX IF NOT EXISTS idx_entries_timestamp ON entries ("timestamp");
CREATE INDEX IF NOT EXISTS idx_entries_metadata ON entries USING gin (metadata);
CREATE INDEX IF NOT EXISTS idx_blocks_block_index ON blocks (block_index);
CREATE INDEX IF NOT EXISTS idx_blocks_hash ON blocks (hash);
CREATE INDEX IF NOT EXISTS idx_blocks_previous_hash ON blocks (previous_hash);
CREATE INDEX IF NOT EXISTS idx_block_entries_block_id ON block_entries (block_id);
CREATE INDEX IF NOT EXISTS idx_block_entries_entry_id ON block_entries (entry_id);
CREATE INDEX IF NOT EXISTS idx_validation_results_entry_id ON validation_results (entry_id);
CREATE INDEX IF NOT EXISTS idx_validation_results_validator_type ON validation_results (validator_type);
CREATE INDEX IF NOT EXISTS idx_validation_results_is_valid ON validation_results (is_valid);
CREATE INDEX IF NOT EXISTS idx_contracts_status ON contracts (status);
CREATE INDEX IF NOT EXISTS idx_contracts_created_by ON contracts (created_by);
CREATE INDEX IF NOT EXISTS idx_contracts_parties ON contracts USING gin (parties);
CREATE INDEX IF NOT EXISTS idx_disputes_status ON disputes (status);
CREATE INDEX IF NOT EXISTS idx_disputes_claimant ON disputes (claimant);
CREATE INDEX IF NOT EXISTS idx_disputes_contract_id ON disputes (contract_id);
CREATE INDEX IF NOT EXISTS idx_audit_log_entity ON audit_log (entity_type, entity_id);
CREATE INDEX IF NOT EXISTS idx_audit_log_actor ON audit_log (actor);
CREATE INDEX IF NOT EXISTS idx_audit_log_created_at ON audit_log (created_at);
CREATE INDEX IF NOT EXISTS idx_audit_log_event_type ON audit_log (event_type);

-- The singleton row; the chain id is 32 random hex characters from the built-in uuid generator.
INSERT INTO chain_state (id, chain_id)
VALUES (1, replace(gen_random_uuid()::text, '-', ''))
ON CONFLICT (id) DO NOTHING;

CREATE OR REPLACE FUNCTION update_updated_at_column()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.updated_at = CURRENT_TIMESTAMP;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER update_entries_updated_at
    BEFORE UPDATE ON entries
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE OR REPLACE TRIGGER update_contracts_updated_at
    BEFORE UPDATE ON contracts
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE OR REPLACE TRIGGER update_chain_state_updated_at
    BEFORE UPDATE ON chain_state
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

COMMENT ON TABLE entries IS 'Natural language blockchain entries';
COMMENT ON TABLE blocks IS 'Blocks containing grouped entries';
COMMENT ON TABLE block_entries IS 'Junction table for block-entry relationships';
COMMENT ON TABLE validation_results IS 'LLM and rule validation results';
COMMENT ON TABLE chain_state IS 'Singleton table for chain coordination';
COMMENT ON TABLE contracts IS 'Natural language smart contracts';
COMMENT ON TABLE disputes IS 'Dispute resolution records';
COMMENT ON TABLE audit_log IS 'Audit trail for operations';
