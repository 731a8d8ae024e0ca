"""HTTP routers of the recommendation API, one module per resource."""
