"""City AI Factory: the library behind the scenario DAGs.

One subpackage per concern (config, storage, ingestion, security, governance, ...). Modules here
import only light dependencies at top level so that DAG parsing stays fast; heavy libraries are
imported inside the functions that need them.
"""
