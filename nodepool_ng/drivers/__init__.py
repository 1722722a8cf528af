"""Cloud drivers. Each driver implements the small interface in `base`."""
