-- Summary of the latest run of every audit check per dataset.
SELECT l.dataset, l.check_name, count(*) FILTER (WHERE c.flag) AS flagged, count(*) AS n,
       round(100.0 * count(*) FILTER (WHERE c.flag) / count(*), 2) AS pct_flagged,
       round(avg(c.score), 4) AS mean_score, l.created_at
FROM latest_checks l JOIN check_rows c USING (run_id)
GROUP BY ALL ORDER BY l.dataset, l.check_name;
