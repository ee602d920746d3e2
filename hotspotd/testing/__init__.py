"""Test and demo equipment, not product: stand-ins for the peers hotspotd talks to that cannot run
here (Safaricom's Daraja in :mod:`.daraja`, a MikroTik's RouterOS API in :mod:`.routeros`).
Each behaves like the real peer on every point shared/reference/ documents. The daemon starts
them in the simulator environment; ``hotspotd simulate …`` runs one on its own."""
