"""The gateway: accepts traces over the Langfuse, LangSmith and OpenTelemetry protocols and
publishes them to the events topic, answering only once Kafka has acknowledged them."""
