"""The leaderboard's parts, one concept per module (the commands stay in harness/:
leaderboard.py, export.py, corruption_metrics.py).

    aggregate   aggregation per setting, intervals, metric tables, ranks, split order
    compare     paired comparisons: methods vs a baseline, scorers vs a baseline scorer
    corruption  corruption errors, mCE and relative mCE
    markdown    the per-dataset Markdown and the index
    plots       matplotlib figures from the tidy table
    reliability reliability diagrams (the baseline's per split; one per setting)
    figure      layout helpers of the matplotlib figures
    palette     one method -> colour and marker mapping per dataset, for every plot
    interactive plotly figures of the page (hover: setting and seed)
    drawing     saving figures and drawing them in worker processes
    plotcache   plots drawn again only when what they show changed
    sections    the report-section interface and its registry (section_kinds: built-ins)
    page        the static HTML page: every registered section per dataset
    export      paper tables (LaTeX, Markdown, CSV)
    build       write_leaderboard: all of the above below a results root
"""
