"""The controller: app factory, lifespan, routes, agent hub, web UI. The composition root."""
