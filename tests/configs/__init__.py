"""Configuration test cases: the project's params.yaml plus one-key overrides."""
