"""The Airflow adapter: task functions, DAG defaults and the local launcher.

Only this package and ``dags/`` know Airflow; importing it imports neither Airflow nor
any heavy library.
"""
