"""``python -m ude_cli`` is the ``ude`` command."""

from ude_cli.cli import main

if __name__ == "__main__":
    main()
