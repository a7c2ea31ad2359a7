"""Faust's aiokafka transport, with changelog ends that hold on every Kafka-compatible broker.

Faust recovers a table by reading its changelog up to the end offset the broker reports and
then stops. Some compatible brokers (tansu, the embedded broker) report the first offset of a
partition's last record batch + 1, so recovery would drop the rest of that batch: the table
writes of the last burst before a crash. The end is therefore probed by reading (see
`tracebus.ops.topic_reader.offset_bounds`); with Apache Kafka the probe changes nothing."""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from tracebus.ops.topic_reader import offset_bounds


class EndProbingConsumer(faust_aiokafka.Consumer):
    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        if not partitions:
            return {}
        transport = self.transport
        servers = faust_aiokafka.server_list(transport.url, transport.default_port)
        probe = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
        await probe.start()
        try:
            bounds = await offset_bounds(
                probe, [TopicPartition(tp.topic, tp.partition) for tp in partitions]
            )
        finally:
            await probe.stop()
        return {tp: bounds[TopicPartition(tp.topic, tp.partition)].end for tp in partitions}


class EndProbingTransport(faust_aiokafka.Transport):
    Consumer = EndProbingConsumer
