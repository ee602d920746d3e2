"""M-Pesa Daraja (STK Push): ``client`` talks to Safaricom, ``codes`` reads result codes,
``simulator`` speaks the same HTTP API for tests, the demo and ``hotspotd simulate daraja``.
"""
