-- Undoes 002_add_semantic_search. The vector extension stays installed:
-- other schemas may use it, and dropping it needs more privileges.
DROP FUNCTION IF EXISTS search_similar_contracts(vector, integer, float);
DROP FUNCTION IF EXISTS search_similar_entries(vector, integer, float);
DROP TABLE IF EXISTS contract_embeddings;
DROP TABLE IF EXISTS entry_embeddings;
