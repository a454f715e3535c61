"""Looking at a finished search: trial data, figures, the HTML report, PNG export, dashboard.

`html.build_report` is the entry point; the modules import plotly/pandas, so nothing is imported
here (the CLI stays fast)."""
