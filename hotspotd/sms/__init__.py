"""SMS to customers: the gateways (:mod:`.gateways`), the queue that sends with retries
(:mod:`.outbox`) and the words (:mod:`.texts`)."""
