"""Routers: talking to the NAS that lets paid devices out (``mikrotik``) and a simulator of one (``routeros_sim``)."""
