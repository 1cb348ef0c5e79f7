-- 002_add_semantic_search: vector embeddings for similarity search.
-- natlangchain: requires-extension vector >= 0.5.0
-- The directive above lets the runner check pg_available_extensions before it
-- starts, so a server without pgvector gets a message that says what to do
-- (install pgvector, or skip this migration with --skip 2).

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE IF NOT EXISTS entry_embeddings (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    entry_id   uuid NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    embedding  vector(384),
    model_name varchar(100) NOT NULL DEFAULT 'all-MiniLM-L6-v2',
    created_at timestamptz DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (entry_id, model_name)
);

CREATE TABLE IF NOT EXISTS contract_embeddings (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    contract_id uuid NOT NULL REFERENCES contracts(id) ON DELETE CASCADE,
    section     varchar(100),
    embedding   vector(384),
    model_name  varchar(100) NOT NULL DEFAULT 'all-MiniLM-L6-v2',
    created_at  timestamptz DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (contract_id, section, model_name)
);

CREATE INDEX IF NOT EXISTS idx_entry_embeddings_hnsw ON entry_embeddings
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX IF NOT EXISTS idx_contract_embeddings_hnsw ON contract_embeddings
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX IF NOT EXISTS idx_entry_embeddings_entry_id ON entry_embeddings (entry_id);
CREATE INDEX IF NOT EXISTS idx_entry_embeddings_model_name ON entry_embeddings (model_name);
CREATE INDEX IF NOT EXISTS idx_contract_embeddings_contract_id ON contract_embeddings (contract_id);

-- Both search functions pin the search_path they were created under, so that
-- a caller's search_path cannot swap in another schema's tables or operators.
CREATE OR REPLACE FUNCTION search_similar_entries(
    query_embedding vector(384),
    limit_count integer DEFAULT 10,
    similarity_threshold float DEFAULT 0.5
)
RETURNS TABLE (entry_id uuid, content text, author varchar(255), similarity float)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    SELECT e.id, e.content, e.author, 1 - (ee.embedding <=> query_embedding)
    FROM entry_embeddings ee
    JOIN entries e ON e.id = ee.entry_id
    WHERE 1 - (ee.embedding <=> query_embedding) >= similarity_threshold
    ORDER BY ee.embedding <=> query_embedding
    LIMIT limit_count;
$$;

CREATE OR REPLACE FUNCTION search_similar_contracts(
    query_embedding vector(384),
    limit_count integer DEFAULT 10,
    similarity_threshold float DEFAULT 0.5
)
RETURNS TABLE (contract_id uuid, title varchar(500), similarity float)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    SELECT c.id, c.title, 1 - (ce.embedding <=> query_embedding)
    FROM contract_embeddings ce
    JOIN contracts c ON c.id = ce.contract_id
    WHERE ce.section = 'full'
      AND 1 - (ce.embedding <=> query_embedding) >= similarity_threshold
    ORDER BY ce.embedding <=> query_embedding
    LIMIT limit_count;
$$;

COMMENT ON TABLE entry_embeddings IS 'Vector embeddings for entry search';
COMMENT ON TABLE contract_embeddings IS 'Vector embeddings for contract search';
