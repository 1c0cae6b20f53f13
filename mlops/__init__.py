"""mlops: end-to-end MLOps pipelines on Apache Airflow."""
