"""Octue metadata: its values (timestamp, labels, tags, id) exactly as Octue's SDK stores them, the three-way merge
of metadata changes, `.octue` files beside local files, and small JSON objects such as a dataset's `.octue`."""
