"""catalog-sync: Keeps the QuoteWerks catalog and customers in step with M3."""
