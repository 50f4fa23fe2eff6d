"""`morgue serve`: the dashboard in a browser, one app process per tab (textual-serve)."""
