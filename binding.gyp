{
  "targets": [
    {
      "target_name": "holdfast_native",
      "sources": ["native/holdfast_native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
