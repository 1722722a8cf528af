"""Tests against a real ZooKeeper (one chroot per test)."""
