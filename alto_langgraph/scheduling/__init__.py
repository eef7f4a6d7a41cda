"""In-process scheduling of a request: logical supersteps without barriers (run-ahead of
Send targets), streaming nodes ' items applied as they come, and the tasks they need."""
