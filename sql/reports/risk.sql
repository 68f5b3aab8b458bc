-- Highest-risk instances of the latest risk runs, with each check's contribution and the instruction.
SELECT c.dataset, c.idx, round(c.score, 4) AS risk, c.flag,
       c.details->>'top' AS top_check, c.details->'contributions' AS contributions,
       left(i.instruction, 100) AS instruction
FROM check_results c
JOIN instances i ON i.dataset = c.dataset AND i.idx = c.idx
WHERE c.check_name = 'risk' AND c.score > 0
QUALIFY row_number() OVER (PARTITION BY c.dataset ORDER BY c.score DESC, c.idx) <= 50
ORDER BY c.dataset, c.score DESC, c.idx;
