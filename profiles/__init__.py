"""Built-in device profiles (data only): installed as the package `edge.builtin_profiles`."""
