"""The data plane's data half: sources, preparation (tokenizer, pieces, shards, manifest), the dataset
every rank reads, and the data cursor (the sample order and where training is in it).

May import: the base helpers and the storage layer. Ray only through a runner handed in.
"""
