"""The relay's Prometheus metrics, on the registry the composition root hands down."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class MailMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.accepted = Counter("lienthong_mail_accepted", "Messages accepted, by listener", ["listener"],
                                registry=registry)
        self.rejected = Counter("lienthong_mail_rejected", "Commands or messages refused, by reason", ["reason"],
                                registry=registry)
        self.auth = Counter("lienthong_mail_auth", "AUTH attempts, by outcome", ["outcome"], registry=registry)
        self.deliveries = Counter("lienthong_mail_deliveries", "Recipient delivery outcomes", ["outcome"],
                                  registry=registry)
        self.queue_size = Gauge("lienthong_mail_queue_messages", "Messages in the spool", registry=registry)
