"""``python -m durablefuture``: the ``df`` command line, for when ``df`` is shadowed by coreutils.

This module is an entry point, not part of the library: it hands over to the CLI in ``daemons``.
"""

from __future__ import annotations

import importlib


def main() -> None:
    cli = importlib.import_module("daemons.df_cli")
    cli.main(prog_name="python -m durablefuture")


if __name__ == "__main__":
    main()
