"""Housecall Pro behind the provider boundary (``docs/housecallpro.md``)."""
