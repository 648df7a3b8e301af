-- 0002: the context tokens move to a table of their own, one row per context.
--
-- The tokens of a context, and the position of a positional table, belong to the context, not to
-- a (context, token) pair: 0001 repeated them on every token row, and the build had to join them
-- onto its GROUP BY. Now the GROUP BY writes `ngrams` alone and the contexts are written once,
-- straight from the build's windows. Readers join the two on (table_id, context_key).

CREATE TABLE ngram_contexts (
    table_id    BIGINT NOT NULL,   -- ngram_tables.table_id
    context_key BIGINT NOT NULL,   -- as in ngrams
    position    INTEGER,           -- raster position y·W + x for positional tables, else NULL
    context     BLOB NOT NULL      -- the context tokens, little-endian uint32 each
);

INSERT INTO ngram_contexts
SELECT table_id, context_key, any_value(position), any_value(context)
FROM ngrams
GROUP BY table_id, context_key
ORDER BY table_id, context_key;

ALTER TABLE ngrams DROP COLUMN context;
ALTER TABLE ngrams DROP COLUMN position;
