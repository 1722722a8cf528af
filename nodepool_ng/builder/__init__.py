"""The image builder: build with diskimage-builder, convert, upload, rotate (doc/builder.md).

`service.Builder` is the daemon; `build`, `upload` and `cleanup` hold its workers, `policy` the
pure decisions, `dib` and `formats` the diskimage-builder and qemu-img steps.
"""
