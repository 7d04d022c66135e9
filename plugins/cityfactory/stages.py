"""The stages a scenario run can include, in pipeline order (the trigger form offers these)."""

STAGES = ["ingest"]
