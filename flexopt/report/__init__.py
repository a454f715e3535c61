"""Looking at a finished search: trial data, figures, the HTML report, PNG export, dashboard.

`html.build_report` (one study) and `html.build_comparison` (several studies in one page) are the
entry points; the modules import plotly/pandas, so nothing is imported here (the CLI stays fast).
"""
