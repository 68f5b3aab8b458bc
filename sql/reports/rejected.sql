-- Rows rejected by `ingest --skip-invalid`, grouped by reason.
SELECT dataset, reason, field, count(*) AS n, min(location) AS first_location
FROM rejected_rows GROUP BY ALL ORDER BY n DESC;
