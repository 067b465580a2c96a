"""`tailfast bench`: the load generator (`load`) and the 1..N worker speedup report (`speedup`)."""
