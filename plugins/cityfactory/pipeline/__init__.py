"""Pipeline adapters: what the DAG's tasks call, one module per stage, with the run context and
the train stage. They read the run's context, call the domain packages and record the ledger."""
