"""Size limits, one number each, shared by every edge: ingest, the bus, the scorer, dead letters.

No imports: the settings, the Post contract and the bus all read these.
"""

from typing import Final

# The largest message value any moodwire topic carries, and the largest line or item ingest
# accepts. Larger input is refused where it is first seen and dead-lettered as a truncated copy
# with its size and hash (moodwire.dead_letters).
MAX_MESSAGE_BYTES: Final = 1_000_000
# What the Kafka producer may send in one request (Kafka's default broker `message.max.bytes` is
# about the same): a full-size message plus its key and headers fits.
PRODUCER_MAX_REQUEST_BYTES: Final = 1_048_576
# Per partition and fetch; a larger record still comes through alone (KIP-74), so one oversized
# message from another producer cannot stall a partition.
CONSUMER_MAX_PARTITION_FETCH_BYTES: Final = 2 * PRODUCER_MAX_REQUEST_BYTES
