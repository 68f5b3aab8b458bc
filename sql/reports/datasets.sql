-- Datasets with their row counts.
SELECT name, format, n_source, n_rows, n_rejected, ingested_at, source_path
FROM datasets ORDER BY name;
