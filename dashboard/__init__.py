"""The control room: a Plotly Dash application over the telemetry database.

``app.py`` is the shell, ``pages/`` one module per page, ``queries.py`` the parameterised SQL
(returning DataFrames), ``figures.py`` pure DataFrame-to-figure functions, ``ids.py`` every
component id.
"""
