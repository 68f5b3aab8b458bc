-- Conflicting neighbours of the latest runs: close instructions with disagreeing responses, both similarities and the differing numbers/names.
SELECT p.dataset, p.idx_a, p.idx_b, round(p.score, 4) AS strength,
       CAST(p.evidence->>'instruction_sim' AS DOUBLE) AS instruction_sim,
       CAST(p.evidence->>'response_sim' AS DOUBLE) AS response_sim,
       p.evidence->>'reasons' AS reasons,
       p.evidence->'numbers' AS numbers, p.evidence->'entities' AS entities,
       left(a.instruction, 100) AS instruction_a, left(a.response, 100) AS response_a,
       left(b.instruction, 100) AS instruction_b, left(b.response, 100) AS response_b
FROM check_pairs p
JOIN latest_checks l ON l.run_id = p.run_id
JOIN instances a ON a.dataset = p.dataset AND a.idx = p.idx_a
JOIN instances b ON b.dataset = p.dataset AND b.idx = p.idx_b
WHERE p.check_name = 'conflicting_neighbors'
ORDER BY strength DESC;
