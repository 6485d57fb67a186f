"""Allow `python -m pve_datastore_exporter`."""

from .cli import main

raise SystemExit(main())
