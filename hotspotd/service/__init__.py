"""The composition root: the only part of hotspotd that wires the boundaries (``portal_web``,
``radius``, waitress) to the core. :mod:`.daemon` is the lifecycle (``Hotspot.start``/``stop``,
``run`` under systemd), :mod:`.cli` the ``hotspotd`` command, :mod:`.simulate` ``hotspotd simulate``."""
