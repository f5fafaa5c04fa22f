"""History for planners, the dashboard and the API: resolution choice, aggregation, gaps, charts."""
