"""Records and pure value types shared by the launcher, builder, CLI and drivers."""
