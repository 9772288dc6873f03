"""``riskstream demo``: the whole system, end to end, on embedded Kafka and Valkey."""
