"""What a producer's own program uses (producer.py): a layer above backends/ and embedded/,
below roles/ and cli/."""
