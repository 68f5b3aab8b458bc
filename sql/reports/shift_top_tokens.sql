-- token shift: the 25 most frequent shifted and marginal tokens of each run (the paper's top shifted tokens)
WITH c AS (
    SELECT run_id, category, token, count(*) AS n, avg(base_rank) AS mean_rank, avg(kl) AS mean_kl
    FROM shift_tokens
    WHERE category IN ('shifted', 'marginal')
    GROUP BY ALL
),
r AS (
    SELECT run_id, category,
           row_number() OVER (PARTITION BY run_id, category ORDER BY n DESC, token) AS rk,
           token, n,
           round(100.0 * n / sum(n) OVER (PARTITION BY run_id, category), 2) AS pct_of_category,
           mean_rank, mean_kl
    FROM c
)
SELECT * FROM r WHERE rk <= 25
ORDER BY run_id, category DESC, rk;
