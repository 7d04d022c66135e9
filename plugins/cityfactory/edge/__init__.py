"""The edge inference node: a small HTTP service with onnxruntime inside (``python -m cityfactory.edge``).

Needs only requirements-edge.txt: no Airflow, pandas or pyarrow here.
"""
