"""RADIUS test and demo equipment: a NAS stand-in answering Disconnect/CoA (:mod:`.nas`) and a
minimal Access-Request client (:mod:`.probe`) for the simulated router."""
