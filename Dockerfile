# The Airflow image of City AI Factory: Airflow 3.3 with the project's pinned requirements and the
# project itself (library, DAGs, dbt project, suites, model specs) where Airflow looks for them.
# Used by every Airflow service of docker-compose.yml; docker compose build builds it.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt /opt/cityfactory/requirements.txt
# torch's CPU wheel: PyPI's default torch is a multi-GB CUDA build.
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -r /opt/cityfactory/requirements.txt

COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root dbt /opt/airflow/dbt
COPY --chown=airflow:root expectations /opt/airflow/expectations
COPY --chown=airflow:root models /opt/airflow/models

# the shared library on every component's path (scheduler, dag-processor, workers, api-server)
ENV PYTHONPATH=/opt/airflow/plugins \
    CITYFACTORY_HOME=/opt/airflow/cityfactory
