"""Local development tooling: the whole stack in processes, the embedded HTTP server, demo data and seeding."""
