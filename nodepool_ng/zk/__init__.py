"""ZooKeeper access: the tree (`paths`), the session (`client`), caches, locks and stores."""
