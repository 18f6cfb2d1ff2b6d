{
  "targets": [
    {
      "target_name": "holdfast_native",
      "sources": ["native/holdfast_native.c", "native/relay.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
