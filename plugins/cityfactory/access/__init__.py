"""Who may do what: a role pair per department of the city (operators, viewers) over the DAGs of
that department's scenarios, and the embedded stack's logins for them, in Airflow's FAB auth
manager."""
