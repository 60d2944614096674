"""One stack of runs in one process: config and its hash, data, the network, the training
loop, checkpoints, the record and its schema, and the cost model."""
