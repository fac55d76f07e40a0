"""Operations tooling, above the status API and below the CLI: the chaos suite (``python -m ops.chaos``)."""
