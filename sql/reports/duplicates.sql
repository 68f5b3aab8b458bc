-- Exact-duplicate clusters and repeated instructions with different responses (latest runs): one row per cluster.
SELECT c.dataset, c.check_name, c.cluster_id, count(*) AS size,
       string_agg(CAST(c.idx AS VARCHAR), ',' ORDER BY c.idx) AS members,
       any_value(left(i.instruction, 120)) FILTER (WHERE i.idx = c.cluster_id) AS instruction,
       count(DISTINCT i.response) AS distinct_responses
FROM check_results c
JOIN instances i ON i.dataset = c.dataset AND i.idx = c.idx
WHERE c.check_name IN ('exact_duplicates', 'duplicate_instructions') AND c.cluster_id IS NOT NULL
GROUP BY ALL
ORDER BY c.dataset, c.check_name, size DESC, c.cluster_id;
