-- Contamination evidence of the latest runs, both directions: rows that overlap an eval item (n-gram coverage or embedding cosine) with the overlapping text.
SELECT p.dataset, p.idx_a AS idx, p.other_dataset, p.idx_b AS other_idx,
       p.evidence->>'via' AS via, round(p.score, 4) AS score,
       CAST(p.evidence->>'coverage' AS DOUBLE) AS coverage, CAST(p.evidence->>'cosine' AS DOUBLE) AS cosine,
       left(coalesce(p.evidence->>'overlap', p.evidence->>'it_text'), 160) AS overlap,
       left(b.instruction, 120) AS other_instruction
FROM check_pairs p
JOIN latest_checks l USING (run_id)
LEFT JOIN instances b ON b.dataset = p.other_dataset AND b.idx = p.idx_b
WHERE p.check_name = 'contamination'
ORDER BY p.dataset, p.other_dataset, p.score DESC, p.idx_a;
