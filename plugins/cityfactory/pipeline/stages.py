"""The stages a scenario run can include (the trigger form offers these).

ingest -> quality (bronze gate) -> transform (dbt) -> quality (features gate) -> transform (gold)
-> monitor (served predictions vs actuals, drift, the retraining decision)
-> train (MLflow run, registered version, alias gate) -> compress (ONNX variants, signed bundle)
-> rollout (staged to the edge fleet, health gates, rollback).
"""

STAGES = ["ingest", "quality", "transform", "monitor", "train", "compress", "rollout"]
# How the trigger form can overrule the retraining decision
RETRAIN_CHOICES = ["auto", "always", "never"]
