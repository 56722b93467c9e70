"""`python -m integration_core.cli …` is `si …` (what `si up` and the local stack start)."""

from integration_core.cli.main import main

main()
