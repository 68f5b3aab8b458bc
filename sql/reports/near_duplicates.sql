-- Near-duplicate pairs of the latest near_duplicates runs with cosine, Jaccard, the method that found them, and both texts.
SELECT p.dataset, c.cluster_id, p.idx_a, p.idx_b, round(p.score, 4) AS score,
       CAST(p.evidence->>'cosine' AS DOUBLE) AS cosine,
       CAST(p.evidence->>'jaccard' AS DOUBLE) AS jaccard,
       p.evidence->>'found_by' AS found_by,
       left(a.instruction, 100) AS instruction_a, left(b.instruction, 100) AS instruction_b
FROM check_pairs p
JOIN latest_checks l ON l.run_id = p.run_id
JOIN check_rows c ON c.run_id = p.run_id AND c.idx = p.idx_a
JOIN instances a ON a.dataset = p.dataset AND a.idx = p.idx_a
JOIN instances b ON b.dataset = p.dataset AND b.idx = p.idx_b
WHERE p.check_name = 'near_duplicates'
ORDER BY p.dataset, c.cluster_id, p.score DESC;
