"""The process runtime: a deployment of stage instances in worker processes behind a router,
joined by pyzmq; what crosses between processes, and how it is supervised."""
