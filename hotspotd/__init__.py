"""hotspotd: pay-to-connect Wi-Fi with M-Pesa, RADIUS and router control. The core: no Flask, no pyrad."""
__version__ = "0.1.0"
