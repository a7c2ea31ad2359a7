"""Client settings every tracebus consumer shares."""

# How long a fetch may wait for records to arrive. Apache Kafka answers a waiting fetch as soon as
# records arrive; tansu (the embedded broker) only when the wait ends, so every hop of a record
# through the pipeline waited for it: Faust's fixed 1.5 s, aiokafka's default 0.5 s. A short wait
# costs an idle consumer a few fetch requests a second.
FETCH_MAX_WAIT_MS = 100
