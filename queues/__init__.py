"""imqueue's measurement engine. Pure Python: it never imports Django, so a worker on another
machine needs only this package and a broker client."""
