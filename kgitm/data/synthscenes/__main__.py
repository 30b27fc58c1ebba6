"""``python -m kgitm.data.synthscenes``: the same as ``kgitm synthscenes``."""

from .cli import main

raise SystemExit(main())
