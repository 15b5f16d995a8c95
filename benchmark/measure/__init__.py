"""Measurements that run the engine on a device and report figures (not records): the GPU report and
the training data loader's throughput."""
