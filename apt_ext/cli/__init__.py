"""The ``apt-ext`` console script: one module per sub-command (see main.COMMANDS)."""
