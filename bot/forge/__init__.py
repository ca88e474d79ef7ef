"""The Forge side: the one REST client (``client``), every path it calls (``paths``), and the live
write-access check (``permissions``)."""
