"""Panel dashboards: one module per lab plus the landing page. Layout and bindings, no maths."""
