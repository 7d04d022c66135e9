"""Pages the project adds to Airflow's UI that read across the platform (runs, lake, registry);
each obeys Airflow's auth manager like Airflow's own pages."""
