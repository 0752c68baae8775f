"""The daemon's own log: one line per record, JSON when stderr is not a terminal, a short human
line when it is; every line of a call carries its request id (``request_id``); known secrets are
masked in every line (``records``). Engines' logs are theirs: ``GET /members/{name}/logs``."""
