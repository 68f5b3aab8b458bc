-- Most common response openings per dataset (from style_features), with share and how many of those rows contain boilerplate.
WITH o AS (
    SELECT dataset, opening, count(*) AS n, count(*) FILTER (WHERE len(boilerplate) > 0) AS with_boilerplate,
           round(avg(n_words), 1) AS mean_words
    FROM style_features WHERE opening <> '' GROUP BY ALL
), t AS (SELECT dataset, count(*) AS total FROM style_features GROUP BY ALL)
SELECT o.dataset, o.opening, o.n, round(100.0 * o.n / t.total, 2) AS pct, o.with_boilerplate, o.mean_words
FROM o JOIN t USING (dataset)
QUALIFY row_number() OVER (PARTITION BY o.dataset ORDER BY o.n DESC, o.opening) <= 25
ORDER BY o.dataset, o.n DESC, o.opening;
