"""The stages a scenario run can include (the trigger form offers these).

ingest -> quality (bronze gate) -> transform (dbt) -> quality (features gate) -> transform (gold)
-> train (MLflow run, registered version, alias gate) -> compress (ONNX variants, signed bundle)
-> rollout (staged to the edge fleet, health gates, rollback).
"""

STAGES = ["ingest", "quality", "transform", "train", "compress", "rollout"]
