"""Per-run pure functions (config -> data -> init -> train -> metrics) that the sweep engine vmaps."""
