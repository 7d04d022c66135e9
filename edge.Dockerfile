# A slim edge inference node: onnxruntime behind a small HTTP server, nothing of Airflow, dbt,
# MLflow or torch (requirements-edge.txt only). It loads signed bundles from the lake (S3).
#   docker build -f edge.Dockerfile -t cityfactory/edge-node .
FROM python:3.11-slim

COPY requirements-edge.txt /tmp/requirements-edge.txt
RUN pip install --no-cache-dir -r /tmp/requirements-edge.txt && useradd --system --home /var/lib/cityfactory-edge edge

# only the modules a node imports (tests/test_compose.py checks the list)
COPY plugins/cityfactory/__init__.py /opt/edge/cityfactory/
COPY plugins/cityfactory/edge /opt/edge/cityfactory/edge
COPY plugins/cityfactory/security /opt/edge/cityfactory/security
COPY plugins/cityfactory/storage /opt/edge/cityfactory/storage
COPY plugins/cityfactory/compression/__init__.py plugins/cityfactory/compression/bundle.py plugins/cityfactory/compression/preprocessing.py /opt/edge/cityfactory/compression/

ENV PYTHONPATH=/opt/edge
USER edge
WORKDIR /var/lib/cityfactory-edge
ENTRYPOINT ["python", "-m", "cityfactory.edge"]
CMD ["--help"]
