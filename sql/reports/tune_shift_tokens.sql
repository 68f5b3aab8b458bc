-- the tokens most often shifted (base rank > 3) by each tuned model, with their mean position
WITH counts AS (
    SELECT t.method, t.run_id AS tune_run, k.token, count(*) AS n, round(avg(k.position), 1) AS mean_position
    FROM tune_runs t
    JOIN shift_runs s ON s.tuned_model = t.out_dir OR suffix(s.tuned_model, '+' || t.out_dir)
    JOIN shift_tokens k ON k.run_id = s.run_id AND k.category = 'shifted'
    GROUP BY t.method, t.run_id, k.token
)
SELECT method, tune_run, token, n, mean_position
FROM counts
QUALIFY row_number() OVER (PARTITION BY tune_run ORDER BY n DESC, token) <= 15
ORDER BY tune_run, n DESC, token;
