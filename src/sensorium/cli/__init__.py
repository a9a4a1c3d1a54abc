"""The `sensorium` command line (typer + rich), thin over the library."""
