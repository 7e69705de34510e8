"""``python -m latentode.cli ARGS``: the ``latentode`` command (the tests run it so, and
Lightning re-runs it so in the other processes of a multi-process run)."""

from . import main

if __name__ == "__main__":  # pragma: no cover
    main()
