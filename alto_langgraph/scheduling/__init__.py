"""In-process scheduling of a request: logical supersteps without barriers (run-ahead of
Send targets and of edge-triggered tasks, checked against what they read), the items of
streaming nodes applied as they come, and the tasks they need."""
