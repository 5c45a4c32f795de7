"""The MQTT side of the center: a shared subscription in a persistent session, QoS 1, manual acks.

paho is told not to acknowledge by itself (manual ack): a message is acknowledged only after Ingest has
committed it. While the database is unreachable the message is retried and not acknowledged, so the broker
keeps it (and sends it again after a reconnect): nothing acknowledged is ever lost.
"""

from __future__ import annotations

import logging
import threading
import time

import paho.mqtt.client as mqtt
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from center.config import CenterMqtt
from center.ingest import Ingest
from edge.listen import printable
from edge.publish.mqtt import Reconnect, connect_failed, make_client

log = logging.getLogger(__name__)

# Topic filters under <prefix>/, each taken as $share/<group>/<prefix>/<filter> at QoS 1.
FILTERS = (
    "+/available",
    "+/stats",
    "+/+/status",
    "+/cameras/+/problem",
    "+/storage",
    "+/events",
    "+/events/+/snapshot",
    "+/events/+/clip",
    "+/events/+/original",
    "+/events/+/manifest",
    "+/events/+/hold/state",
)
RETRY_FIRST_S = 0.5  # a failed commit (database busy or away) is tried again after this, doubling
RETRY_CAP_S = 10.0  # ... up to this: the message stays unacknowledged meanwhile
MAX_HANDLER_FAILURES = 5  # tries of a message that fails for a reason other than the database or disk
PUBLISH_TIMEOUT_S = 10.0  # a feedback message not acknowledged by the broker in this time is retried later


class Receiver:
    """Feeds every message to Ingest and acknowledges it after the commit; publishes feedback."""

    def __init__(self, cfg: CenterMqtt, client_id: str, ingest: Ingest):
        self.cfg = cfg
        self.ingest = ingest
        self.client = make_client(cfg, client_id, clean_session=False)
        self.client.manual_ack_set(True)
        self.reconnect = Reconnect(self.client, cfg)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.stopping = threading.Event()
        self.handled = 0

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        self.stopping.set()
        self.client.disconnect()
        self.client.loop_stop()

    def filters(self) -> list[str]:
        return [f"$share/{self.cfg.share_group}/{self.cfg.topic_prefix}/{f}" for f in FILTERS]

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            connect_failed(client, f"broker refused the center: {reason_code}")
            return
        self.reconnect.connected()
        self.connected.set()
        client.subscribe([(f, 1) for f in self.filters()])  # the session may have them; again is harmless
        log.info(
            "center connected to %s:%s (session present: %s)", self.cfg.host, self.cfg.port, flags.session_present
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("the broker refused a subscription (ACL?): %s", reason_codes)
            return
        log.info("subscribed to %s", " ".join(self.filters()))
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if self.connected.is_set() and not self.stopping.is_set():
            log.warning("center disconnected (%s); the broker keeps messages for our session", reason_code)
        self.connected.clear()

    def _on_message(self, client, userdata, msg) -> None:
        delay, failures = RETRY_FIRST_S, 0
        while not self.stopping.is_set():
            try:
                self.ingest.handle(msg.topic, msg.payload, retained=bool(msg.retain))
                break
            except IntegrityError:
                # Another instance made the same row (an alert and its still, split between instances) and has
                # committed it by now: again at once finds it. Over and over would be a bug: let it go, counted.
                failures += 1
                if failures < MAX_HANDLER_FAILURES:
                    continue
                log.exception("giving up a message on %s that keeps colliding", printable(msg.topic))
                self.ingest.drops("handler error", msg.topic)
                break
            except (DBAPIError, OSError) as exc:
                if not isinstance(exc, DataError):  # the database or the disk: wait, never drop the message
                    log.exception(
                        "could not store a message on %s; retrying in %.1f s", printable(msg.topic), delay
                    )
                    time.sleep(delay)
                    delay = min(RETRY_CAP_S, delay * 2)
                    continue
                log.exception("the database refuses a message on %s; letting it go", printable(msg.topic))
                self.ingest.drops("handler error", msg.topic)
                break
            except Exception:  # a message our code cannot handle: a few tries, then it is counted and let go
                failures += 1
                if failures >= MAX_HANDLER_FAILURES:
                    log.exception("giving up a message on %s that fails to be handled", printable(msg.topic))
                    self.ingest.drops("handler error", msg.topic)
                    break  # acknowledged: one poisonous message must not stop every alert behind it
                log.warning("a message on %s failed (%d); retrying", printable(msg.topic), failures, exc_info=True)
                time.sleep(RETRY_FIRST_S)
        else:
            return  # stopping: not acknowledged, so the broker sends it again to us or another instance
        client.ack(msg.mid, msg.qos)
        self.handled += 1

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement; raises when it does not come."""
        if not self.connected.is_set():
            raise ConnectionError("not connected to the broker")
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(mqtt.error_string(info.rc))
        info.wait_for_publish(PUBLISH_TIMEOUT_S)
        if not info.is_published():
            raise TimeoutError("the broker did not acknowledge the feedback")
