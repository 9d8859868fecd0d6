"""`sessiond serve`: a relay for one's own devices, speaking the subset of the S5 portal HTTP API that
stores/s5.py speaks (so `--store s5+http://HOST:PORT` reaches it), plus a change feed on heads.

    objects.py    blobs in a folder, pinned per account, a storage quota per account
    recover.py    at start: temp files, unpinned objects, unwritten heads' charges of a cut write
    registry.py   heads (S5 registry entries): signature checked, revision only moves forward
    accounts.py   the S5 challenge login, hashed tokens (they expire), invites
    admin.py      the operator's commands: list the accounts, revoke one (or restore it)
    feed.py       which heads an account follows changed since its cursor, with long-poll
    app.py        the HTTP routes and the server
    body.py       request bodies: bounded, in time (BODY_TIMEOUT), a malformed one a 400
    conns.py      the connections one client address holds open at once, capped (a 429 past it)

Imports flow relay -> stores/ (cid, registry entries, the object size cap) and storage/ (fsutil) only:
nothing here imports sync/, daemon/, client/ or cli/.
"""
