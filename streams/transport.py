"""A faust transport tuned for milliseconds, plugged in through faust's extension point.

faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500`` for worker consumers: on a
quiet partition every fetch then waits up to 1.5 s, which is the latency floor of the
whole pipeline. This transport is registered under the ``faust.transports`` entry point
as ``recstream://`` (see pyproject.toml); its consumer thread applies
``Settings.kafka.fetch_max_wait_ms`` and its producer merges ``Settings.kafka.producer_extra``.
No site-packages are edited.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.settings import KafkaSettings

SCHEME = "recstream"


def _kafka_settings(app: Any) -> KafkaSettings:
    """The app built by :func:`streams.app.build_app` carries the recstream settings."""
    settings = getattr(app, "recstream_settings", None)
    return settings.kafka if settings is not None else KafkaSettings()


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        kafka = _kafka_settings(self.app)
        # aiokafka reads this when the consumer starts (it builds its Fetcher in start()),
        # so setting it before start() is equivalent to passing it to the constructor,
        # which faust does not let us do.
        consumer._fetch_max_wait_ms = kafka.fetch_max_wait_ms
        return consumer

    def _create_client_consumer(self, transport: Any) -> Any:
        consumer = super()._create_client_consumer(transport)
        consumer._fetch_max_wait_ms = _kafka_settings(self.app).fetch_max_wait_ms
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Producer(faust_aiokafka.Producer):
    def _settings_extra(self) -> Mapping[str, Any]:
        kafka = _kafka_settings(self.app)
        return {**super()._settings_extra(), "linger_ms": kafka.linger_ms, **kafka.producer_extra}


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[type] = Consumer
    Producer: ClassVar[type] = Producer
