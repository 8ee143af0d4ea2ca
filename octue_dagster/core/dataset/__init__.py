"""`Dataset` and `Manifest`: many Datafiles as one unit, as in Octue's SDK, with Octue's filter syntax."""
