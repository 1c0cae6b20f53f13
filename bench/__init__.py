"""Benchmarks of the pipeline against the bare computation (not part of the tests)."""

ENV = {  # every benchmark process runs with these
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "FEAST_USAGE": "False",
}
