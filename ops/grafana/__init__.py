"""Grafana dashboards as code: one Python source per dashboard, rendered to the chart's provisioning JSON.

`python -m ops.grafana.generate` (from the checkout's root) rewrites
charts/dreambot/files/dashboards/{trading,pipeline,jobs}.json; a test fails when the committed files differ.
"""
