"""The planner HTTP API: history, exports and open-data views over the query layer."""
