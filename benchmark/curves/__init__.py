"""Training curves: MMSegmentation's published training logs and nlbench's own, read into one typed
curve (``reader``), the checks of a run against a reference curve (``checks``), and where reference
logs come from (``reference``: the release's log in the download cache, a smoke reference log in
the repository, or a local file). docs/CURVES.md describes the formats and the checks.

The package sits below ``engine`` (the training guard reads curves while a run trains) and above
``catalog`` (reference logs are found through the recipes' release sections).
"""
