"""The stages a scenario run can include (the trigger form offers these).

ingest -> quality (bronze gate) -> transform (dbt) -> quality (features gate) -> transform (gold)
-> train (MLflow run, registered version, alias gate) -> compress (ONNX variants, signed bundle).
"""

STAGES = ["ingest", "quality", "transform", "train", "compress"]
