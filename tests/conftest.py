"""Session fixtures: one encoder export, one embedded broker, one worker."""

pytest_plugins = [
    "tests.encoder_fixtures",
    "tests.engine_fixtures",
    "tests.pipeline_fixtures",
]
