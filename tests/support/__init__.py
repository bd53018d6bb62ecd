"""Test helpers shared by every suite: real brokers on free ports, waiting on conditions."""
