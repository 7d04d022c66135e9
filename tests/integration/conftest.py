"""The integration layer: whole DAG runs and real services (S3, Airflow's scheduler and API
server, Celery workers, MLflow's server, edge nodes, a browser). Every test here is marked
``integration``, so ``pytest -m "not integration"`` (``make test-fast``) leaves them out."""

import pytest


def pytest_collection_modifyitems(config, items):
    here = config.rootpath / "tests" / "integration"
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.integration)
