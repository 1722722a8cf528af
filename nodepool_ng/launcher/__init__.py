"""The launcher daemon: answers node requests from ZooKeeper with servers from clouds.

Entry point: `nodepool_ng.launcher.service.Launcher` (see doc/launcher.md).
"""
