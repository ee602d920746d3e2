"""RADIUS in and out: the server routers ask, and the replies in each router's own words."""
