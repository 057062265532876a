"""Pure policies: small decisions the core and the shell share.

Each module is a handful of pure functions over frozen values; time comes in as
``now`` and nothing here performs I/O.

- ``blocking``: who may message, see presence or typing of, or drive a slideshow with whom.
- ``ratelimit``: the token bucket behind every request limit.
- ``reddit_budget``: the deployment-wide Reddit API budget (REDDIT.md §7).
- ``cache``: freshness of cached Reddit listings (fresh, stale, expired).
- ``media``: media type sniffing by magic bytes, size and pixel limits.
- ``keys``: blob storage key naming (API.md "Media").
"""
