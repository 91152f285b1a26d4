"""HTTP handlers: one RouteTableDef per resource, registered by app.create_app."""
