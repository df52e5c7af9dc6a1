"""The tree the mount shows: nodes, their names and attributes, call records, views. No pyfuse3."""
