{
  "targets": [
    {
      "target_name": "holdfast_native",
      "sources": ["native/holdfast_native.c", "native/errno_name.c", "native/relay.c", "native/relay_engine.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
