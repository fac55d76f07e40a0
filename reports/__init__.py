"""Cost reports: spend rolled up from the ledger and the attempts, repriced at a baseline, projected forward.

``reports.report.cost_report`` is the one function ``switchyard report`` and ``GET /api/reports/costs`` call;
the modules below it each hold one idea:

    period     the report's period and grouping keys, parsed from what a person typed (pure)
    rollup     the SQL roll-up (GROUP BY over the hourly roll-up ``report_hours``, raw rows for part-hours)
    baseline   the baseline model's prices and the repricing of token sums at them (pure)
    forward    budgets forward: used, held, rate, projections, when a cap is reached; peak hour, top tasks
    render     the report as text table rows, CSV and JSON-ready values
    charts     the charts (Vega-Lite through altair), the self-contained HTML file, the PNG
"""
